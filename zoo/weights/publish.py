"""Hub publishing primitives: the ``README.md`` model card, ``HfApi.upload_folder`` and the served SHA-256.
Building the folder needs a model, so it lives above the builder (``zoo.release``)."""

from __future__ import annotations

import os
from typing import Any

from zoo.weights.io import WEIGHTS_NAME
from zoo.weights.manifest import WeightEntry

__all__ = ["hub_api", "model_card", "remote_sha256", "upload_hub_folder"]

_CITATION = """@inproceedings{zhang2019shiftinvar,
  title={Making Convolutional Networks Shift-Invariant Again},
  author={Zhang, Richard},
  booktitle={ICML},
  year={2019}
}"""


def model_card(entry: WeightEntry, params: int) -> str:
    """The README.md of a hub repo: license, origin, published metrics, usage, citation."""
    lic = entry.license_info
    hub = entry.hub_source()
    repo = hub["repo_id"] if hub else entry.tag
    metrics = entry.metrics
    kind = f"anti-aliased (BlurPool, filter size {entry.filter_size})" if entry.filter_size else "torchvision baseline"
    pre = entry.preprocess
    lines = [
        "---",
        f"license: {entry.license}",
        "library_name: timm",
        "pipeline_tag: image-classification",
        "tags: [image-classification, antialiased-zoo, blurpool, timm]",
        "datasets: [imagenet-1k]",
        "---",
        f"# {entry.tag}",
        "",
        f"`{entry.model}`: {kind} {entry.architecture} for ImageNet-1k classification, "
        f"{params / 1e6:.1f} M parameters.",
        "",
    ]
    if entry.torchvision_init:
        lines += [f"**{entry.data['recipe']}.**", ""]
    lines += [
        f"- **Origin:** {entry.data['origin']} ({entry.data.get('origin_url', '')})",
        f"- **Recipe:** {entry.data['recipe']}",
        f"- **License:** {lic['name']} ({lic['url']})"
        + ("" if lic["commercial_use"] else ". **Non-commercial use only.**"),
        f"- **Eval preprocessing:** resize {round(pre['input_size'][-1] / pre['crop_pct'])}, "
        f"center crop {pre['input_size'][-1]}, {pre['interpolation']}, mean {pre['mean']}, std {pre['std']}",
        "",
        "## Published results",
        "",
    ]
    if metrics:
        consistency = metrics["imagenet_consistency"]
        lines += [
            "| ImageNet top-1 (%) | shift consistency (%) |",
            "|---|---|",
            f"| {metrics['imagenet_top1']:.2f} | {'not published' if consistency is None else f'{consistency:.2f}'} |",
            "",
            f"Protocol: {metrics['protocol']}. Source: {metrics['source']}.",
        ]
    else:
        lines.append("No figures were published for these exact weights.")
    lines += [
        "",
        "## Usage",
        "",
        "```python",
        "import zoo",
        f'model = zoo.create("{entry.model}", pretrained="{entry.pretrained_tag}").eval()',
        "transform = zoo.transforms(model)",
        "",
        "import timm  # after `import zoo`, which registers the zoo models with timm",
        f'model = timm.create_model("hf-hub:{repo}", pretrained=True)',
        "```",
        "",
        "## Citation",
        "",
        "```bibtex",
        _CITATION,
        "```",
        "",
    ]
    return "\n".join(lines)


def hub_api(token: str | None = None) -> Any:
    """An ``HfApi`` for ``$HF_ENDPOINT`` (default: huggingface.co)."""
    from huggingface_hub import HfApi

    return HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None, token=token)


def _http_reason(err: Exception) -> str:
    response = getattr(err, "response", None)
    status = f"HTTP {response.status_code}: " if response is not None else ""
    lines = str(err).strip().splitlines()
    return status + (lines[0] if lines else type(err).__name__)


def upload_hub_folder(folder: str | os.PathLike, repo_id: str, message: str, token: str | None = None) -> str:
    """Create ``repo_id`` if needed and upload ``folder`` with ``HfApi.upload_folder``; returns the commit.

    A hub or network failure raises ``RuntimeError`` with one line naming the repo and the reason (the
    CLI prints it without a traceback)."""
    from huggingface_hub.errors import HfHubHTTPError

    api = hub_api(token)
    try:
        api.create_repo(repo_id, exist_ok=True)
        return api.upload_folder(repo_id=repo_id, folder_path=str(folder), commit_message=message).oid
    except HfHubHTTPError as err:
        raise RuntimeError(f"upload of {folder} to {repo_id} failed: {_http_reason(err)}") from err
    except OSError as err:  # network errors (httpx) subclass OSError
        raise RuntimeError(f"upload of {folder} to {repo_id} failed: {type(err).__name__}: {err}") from err


def remote_sha256(repo_id: str, filename: str = WEIGHTS_NAME, token: str | None = None) -> str | None:
    """SHA-256 of ``filename`` on the hub (its LFS ETag), or ``None`` when the repo or file does not exist.
    Other failures raise ``RuntimeError`` (one line)."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, RepositoryNotFoundError

    endpoint = os.environ.get("HF_ENDPOINT") or None
    try:
        meta = get_hf_file_metadata(hf_hub_url(repo_id, filename, endpoint=endpoint), token=token)
    except (RepositoryNotFoundError, EntryNotFoundError):
        return None
    except HfHubHTTPError as err:
        if err.response is not None and err.response.status_code == 404:
            return None
        raise RuntimeError(f"cannot check {repo_id}/{filename} on the hub: {_http_reason(err)}") from err
    except OSError as err:
        raise RuntimeError(f"cannot reach the hub for {repo_id}: {type(err).__name__}: {err}") from err
    return meta.etag
