"""Fine-tuning zoo models on small datasets (``zoo finetune``).

>>> from zoo.train import finetune
>>> result = finetune("configs/finetune/digits.yaml", ["train.epochs=1"])  # doctest: +SKIP
>>> print(result.table)  # doctest: +SKIP
"""

from zoo.train.config import ConfigError, FinetuneConfig, config_keys, load_finetune_config
from zoo.train.run import FinetuneResult, finetune

__all__ = ["ConfigError", "FinetuneConfig", "FinetuneResult", "config_keys", "finetune", "load_finetune_config"]
