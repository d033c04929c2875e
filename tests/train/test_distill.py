import math

import pytest
import torch

import zoo
from zoo.config import ConfigError
from zoo.train.distill import DistillConfig, distill_loss, freeze_teacher, make_student


def test_equal_logits_give_zero():
    x = torch.randn(4, 10)
    assert float(distill_loss(x, x.clone(), 3.0)) == pytest.approx(0.0, abs=1e-6)


def test_two_class_kl_by_hand():
    s, t = torch.tensor([[0.0, 0.0]]), torch.tensor([[math.log(3.0), 0.0]])  # p_t = (3/4, 1/4), p_s = (1/2, 1/2)
    expected = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert float(distill_loss(s, t, 1.0)) == pytest.approx(expected, rel=1e-5)


def test_temperature_squared_scaling():
    s, t = torch.tensor([[0.0, 0.0]]), torch.tensor([[2 * math.log(3.0), 0.0]])  # at T=2: the case above
    expected = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    assert float(distill_loss(s, t, 2.0)) == pytest.approx(4 * expected, rel=1e-5)


def test_alpha_adds_cross_entropy():
    s, t, y = torch.randn(3, 5), torch.randn(3, 5), torch.tensor([0, 2, 4])
    ce = torch.nn.functional.cross_entropy(s, y)
    assert float(distill_loss(s, t, 2.0, y, 0.5) - distill_loss(s, t, 2.0)) == pytest.approx(0.5 * float(ce), rel=1e-5)


def test_student_keys_and_frozen_teacher():
    teacher = freeze_teacher(zoo.create("resnet18", num_classes=10))
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student = make_student(teacher, DistillConfig(teacher="resnet18"))
    assert list(student.state_dict()) == list(teacher.state_dict())
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    x = torch.randn(2, 3, 32, 32)
    student.train()
    distill_loss(student(x), teacher(x), 4.0).backward()
    torch.optim.SGD(student.parameters(), lr=0.1).step()
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    assert any(p.grad is not None for p in student.parameters())


@pytest.mark.parametrize(
    ("kwargs", "key"), [({"temperature": 0.0}, "distill.temperature"), ({"alpha": 2.0}, "distill.alpha")]
)
def test_validation_one_line(kwargs, key):
    with pytest.raises(ConfigError, match=key) as info:
        DistillConfig(**kwargs).validate()
    assert "\n" not in str(info.value)


def test_tiny_unlabeled_distill_run_lowers_the_loss():
    from zoo.train.data import digits_tensors
    from zoo.train.distill import distill_epoch

    torch.manual_seed(0)
    images, _ = digits_tensors(16, 3)
    images = images[:64].float()
    teacher = freeze_teacher(zoo.create("resnet18", num_classes=10))
    cfg = DistillConfig(teacher="resnet18", temperature=2.0)
    student = make_student(teacher, cfg)
    opt = torch.optim.SGD(student.parameters(), lr=0.05, momentum=0.9)
    batches = list(images.split(16))  # images only: no labels
    losses = [distill_epoch(student, teacher, batches, opt, cfg) for _ in range(4)]
    assert losses[-1] < losses[0]
