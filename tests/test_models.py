"""The model zoo: every model config builds, takes a training step on raw pixels, and is the
architecture the paper describes; ImageNet weights load from a file or say exactly which file is missing."""

from __future__ import annotations

import re

import pytest
import torch
import torchvision
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from conftest import CONFIG_DIR, compose_config
from robustness_bias import models
from robustness_bias.models import MissingWeights, Normalize, split_checkpoint
from robustness_bias.models.pyramidnet import PyramidUnit

NORMALIZATION = {"mean": [0.5, 0.4, 0.3], "std": [0.25, 0.25, 0.25]}
TORCHVISION = ["alexnet", "vgg19_bn", "resnet18", "resnet50", "densenet121", "squeezenet1_0"]

# The smallest square image each torchvision network takes: smaller ones vanish in its pooling.
MIN_SIDE = {"alexnet": 63, "vgg19_bn": 32, "resnet18": 1, "resnet50": 1, "densenet121": 29, "squeezenet1_0": 21}

IMAGENET_FILES = {
    "alexnet": "alexnet-owt-7be5be79.pth",
    "vgg19_bn": "vgg19_bn-c79401a0.pth",
    "resnet18": "resnet18-f37072fd.pth",
    "resnet50": "resnet50-0676ba61.pth",
    "densenet121": "densenet121-a639ec97.pth",
    "squeezenet1_0": "squeezenet1_0-b66bff10.pth",
}

HEADS = {"alexnet": "classifier.6", "vgg19_bn": "classifier.6", "resnet18": "fc", "resnet50": "fc",
         "densenet121": "classifier", "squeezenet1_0": "classifier.1"}


def builder_of(name: str, *overrides: str):
    """The builder of ``conf/model/<name>.yaml``, as the pipeline makes it (the checkpoint set aside)."""
    spec, _ = split_checkpoint(OmegaConf.to_container(compose_config([f"model={name}", *overrides]).model, resolve=True))
    return instantiate(spec)


def build(name: str, side: int, *overrides: str, num_classes: int = 10) -> nn.Module:
    """The model of ``conf/model/<name>.yaml`` for side×side RGB images."""
    return builder_of(name, *overrides)(input_shape=(3, side, side), num_classes=num_classes, normalization=NORMALIZATION)


def leaf_layers(model: nn.Module) -> list[nn.Module]:
    return [module for module in model.modules() if not list(module.children())]


def parameter_count(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


def describe(layer: nn.Module) -> str:
    """A layer in the paper's words, so that expected architectures below read like its description."""
    if isinstance(layer, nn.Conv2d):
        kernel, stride, padding = layer.kernel_size[0], layer.stride[0], layer.padding[0]
        return f"conv{kernel} {layer.in_channels}→{layer.out_channels} stride{stride} pad{padding}"
    if isinstance(layer, nn.BatchNorm2d):
        return "bn" if layer.affine else "bn no-affine"
    if isinstance(layer, nn.BatchNorm1d):
        return f"bn1d {layer.num_features}"
    if isinstance(layer, nn.Dropout):
        return f"dropout {layer.p}"
    if isinstance(layer, nn.MaxPool2d):
        return f"maxpool {layer.kernel_size}/{layer.stride}"
    if isinstance(layer, nn.Linear):
        return f"linear {layer.in_features}→{layer.out_features}"
    return type(layer).__name__.lower()


def architecture(model: nn.Module) -> list[str]:
    return [describe(layer) for layer in leaf_layers(model)]


# ---------------------------------------------------------------- every config trains a step

# (config, image side, batch): each dataset's own size (CIFAR 32, UTKFace 200, Adience 224), heavy
# ImageNet networks also at 64 and the cheapest one at 224, so the file stays fast on two cores.
STEP_CASES = [
    ("logreg", 32, 2),
    ("small_cnn", 32, 2),
    ("deep_cnn", 32, 2),
    ("deep_cnn_cifar100", 32, 2),
    ("pyramidnet", 32, 2),
    ("pyramidnet_bottleneck", 32, 2),
    ("utk_classifier", 200, 2),
    ("adience_classifier", 224, 2),
    ("alexnet", 64, 2),
    ("vgg19_bn", 32, 2),
    ("vgg19_bn", 64, 2),
    ("resnet18", 32, 2),
    ("resnet50", 32, 2),
    ("resnet50", 64, 2),
    ("densenet121", 32, 2),
    ("densenet121", 64, 2),
    ("squeezenet1_0", 32, 2),
    ("squeezenet1_0", 224, 1),
]


def test_every_model_config_is_exercised():
    # torchscript loads a saved file instead of building: tests/test_audit_mode.py covers it
    configs = {path.stem for path in (CONFIG_DIR / "model").glob("*.yaml")} - {"torchscript"}
    assert {name for name, _, _ in STEP_CASES} == configs


@pytest.mark.parametrize(("name", "side", "batch"), STEP_CASES, ids=[f"{n}-{s}px" for n, s, _ in STEP_CASES])
def test_config_builds_and_takes_a_training_step(name, side, batch):
    torch.manual_seed(0)
    model = build(name, side)
    assert isinstance(leaf_layers(model)[0], Normalize)

    logits = model(torch.rand(batch, 3, side, side))
    assert logits.shape == (batch, 10)
    nn.functional.cross_entropy(logits, torch.arange(batch) % 10).backward()
    # Fully fine-tuned: every parameter trains.
    assert all(parameter.grad is not None for parameter in model.parameters())


def test_normalize_is_applied_first():
    model = build("resnet18", 32)
    x = torch.rand(2, 3, 32, 32)
    mean = torch.tensor(NORMALIZATION["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(NORMALIZATION["std"]).view(1, 3, 1, 1)
    model.eval()
    torch.testing.assert_close(model(x), model[1]((x - mean) / std))


# ---------------------------------------------------------------- torchvision networks


@pytest.mark.parametrize("name", TORCHVISION)
def test_torchvision_model_is_normalize_then_torchvisions_network_with_a_head_for_the_classes(name):
    model = build(name, max(MIN_SIDE[name], 32), num_classes=7)
    assert len(model) == 2 and isinstance(model[0], Normalize)
    assert not list(model[0].parameters())  # Normalize has buffers only
    torch.testing.assert_close(model[0].mean.flatten(), torch.tensor(NORMALIZATION["mean"]))
    with torch.device("meta"):  # shapes only: no memory, no initialization
        imagenet = getattr(torchvision.models, name)()  # torchvision's own 1000-class network
    assert type(model[1]) is type(imagenet)
    shapes = {key: tuple(value.shape) for key, value in model[1].state_dict().items()}
    expected = {key: tuple(value.shape) for key, value in imagenet.state_dict().items()}
    assert shapes.keys() == expected.keys()
    head = {key for key in expected if key.startswith(HEADS[name] + ".")}
    assert head == {f"{HEADS[name]}.weight", f"{HEADS[name]}.bias"}
    assert {key: shapes[key] for key in expected.keys() - head} == {key: expected[key] for key in expected.keys() - head}
    for key in head:  # the head alone differs: 7 outputs where ImageNet has 1000
        assert expected[key][0] == 1000 and shapes[key] == (7, *expected[key][1:]), key


@pytest.mark.parametrize("name", [name for name in TORCHVISION if MIN_SIDE[name] > 1])
def test_torchvision_minimum_side_is_exact_and_enforced(name):
    with torch.device("meta"):
        network = getattr(torchvision.models, name)(num_classes=10).eval()
        network(torch.empty(1, 3, MIN_SIDE[name], MIN_SIDE[name]))
        with pytest.raises(RuntimeError):
            network(torch.empty(1, 3, MIN_SIDE[name] - 1, MIN_SIDE[name] - 1))

    smallest, too_small = MIN_SIDE[name], MIN_SIDE[name] - 1
    with pytest.raises(ValueError, match=rf"{name}.*at least {smallest}×{smallest}.*{too_small}×{too_small}"):
        build(name, too_small)


def test_torchvision_models_refuse_grayscale():
    builder = builder_of("resnet18")
    with pytest.raises(ValueError, match="RGB"):
        builder(input_shape=(1, 32, 32), num_classes=10, normalization={"mean": [0.5], "std": [0.5]})


@pytest.fixture
def empty_hub(tmp_path, monkeypatch):
    """A torch hub cache with no weights in it, whatever this machine has cached."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    checkpoints = tmp_path / "torch" / "hub" / "checkpoints"
    assert torch.hub.get_dir() == str(checkpoints.parent), "torch.hub.set_dir was called: TORCH_HOME is ignored"
    return checkpoints


@pytest.mark.parametrize("name", TORCHVISION)
def test_pretrained_without_weights_says_what_to_download_and_where_to_put_it(name, empty_hub):
    file_name = IMAGENET_FILES[name]
    with pytest.raises(MissingWeights) as error:
        build(name, 64, "model.pretrained=true")
    message = str(error.value)
    assert isinstance(error.value, FileNotFoundError)
    assert f"https://download.pytorch.org/models/{file_name}" in message
    assert str(empty_hub / file_name) in message
    assert "model.weights_path=" in message and "imagenet.pretrained=false" in message


def test_a_missing_weights_path_is_named(tmp_path, empty_hub):
    missing = tmp_path / "nowhere.pth"
    with pytest.raises(MissingWeights, match=re.escape(f"model.weights_path={missing} does not exist")):
        build("resnet18", 32, "model.pretrained=true", f"model.weights_path={missing}")


def _as_old_densenet_file(state: dict) -> dict:
    """Like torchvision's DenseNet checkpoint: 'norm.1' for today's 'norm1', saved before BatchNorm counted batches."""
    return {
        re.sub(r"(denselayer\d+\.(?:norm|conv))([12])\.", r"\1.\2.", key): value
        for key, value in state.items()
        if not key.endswith("num_batches_tracked")
    }


@pytest.mark.parametrize("name", ["resnet18", "squeezenet1_0", "densenet121"])
def test_pretrained_loads_imagenet_weights_before_replacing_the_head(name, tmp_path, empty_hub):
    imagenet = getattr(torchvision.models, name)()  # a 1000-class network standing in for the real weights
    saved = imagenet.state_dict()
    path = tmp_path / IMAGENET_FILES[name]
    torch.save(_as_old_densenet_file(saved) if name == "densenet121" else saved, path)

    model = build(name, 64, "model.pretrained=true", f"model.weights_path={path}", num_classes=7)
    loaded = model[1].state_dict()
    backbone = [key for key in saved if not key.startswith(HEADS[name] + ".")]
    assert len(backbone) < len(saved)
    for key in backbone:
        torch.testing.assert_close(loaded[key], saved[key], rtol=0, atol=0, msg=key)
    assert model(torch.rand(2, 3, 64, 64)).shape == (2, 7)
    with torch.device("meta"):
        assert parameter_count(model) == parameter_count(getattr(torchvision.models, name)(num_classes=7))


def test_pretrained_reads_torch_hubs_cache(empty_hub):
    saved = torchvision.models.squeezenet1_0().state_dict()
    empty_hub.mkdir(parents=True)
    torch.save(saved, empty_hub / IMAGENET_FILES["squeezenet1_0"])
    model = build("squeezenet1_0", 32, "model.pretrained=true")
    torch.testing.assert_close(model[1].features[0].weight, saved["features.0.weight"], rtol=0, atol=0)


def test_weights_of_another_network_are_refused(tmp_path):
    path = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), path)
    with pytest.raises(ValueError, match="does not hold squeezenet1_0's ImageNet weights"):
        build("squeezenet1_0", 32, "model.pretrained=true", f"model.weights_path={path}")


# ---------------------------------------------------------------- the paper's own networks


def conv_bn_relu(in_channels: int, out_channels: int, padding: int = 1, bn: str = "bn") -> list[str]:
    return [f"conv3 {in_channels}→{out_channels} stride1 pad{padding}", bn, "relu"]


def test_deep_cnn_is_the_vgg_for_cifar10_with_bn_and_dropout():
    expected = ["normalize"]
    expected += [*conv_bn_relu(3, 64), "dropout 0.3", *conv_bn_relu(64, 64), "maxpool 2/2"]
    expected += [*conv_bn_relu(64, 128), "dropout 0.4", *conv_bn_relu(128, 128), "maxpool 2/2"]
    for in_channels, out_channels in [(128, 256), (256, 512), (512, 512)]:
        expected += [*conv_bn_relu(in_channels, out_channels), "dropout 0.4", *conv_bn_relu(out_channels, out_channels),
                     "dropout 0.4", *conv_bn_relu(out_channels, out_channels), "maxpool 2/2"]
    expected += ["flatten", "dropout 0.5", "linear 512→512", "bn1d 512", "relu", "dropout 0.5", "linear 512→10"]
    assert architecture(build("deep_cnn", 32)) == expected


def test_deep_cnn_cifar100_has_1024_features_at_32px():
    no_affine = "bn no-affine"
    expected = [
        "normalize",
        *conv_bn_relu(3, 128, bn=no_affine), *conv_bn_relu(128, 128, bn=no_affine), "maxpool 2/2",
        *conv_bn_relu(128, 256, bn=no_affine), *conv_bn_relu(256, 256, bn=no_affine), "maxpool 2/2",
        *conv_bn_relu(256, 512, bn=no_affine), *conv_bn_relu(512, 512, bn=no_affine), "maxpool 2/2",
        *conv_bn_relu(512, 1024, padding=0, bn=no_affine), "maxpool 2/2",
        "flatten", "linear 1024→100",
    ]  # fmt: skip
    assert architecture(build("deep_cnn_cifar100", 32, num_classes=100)) == expected


@pytest.mark.parametrize(("side", "features"), [(200, 64 * 49 * 49), (64, 64 * 15 * 15)])
def test_utk_classifier_sizes_its_head_from_the_image(side, features):
    expected = [
        "normalize",
        "conv7 3→32 stride1 pad2", "relu", "dropout 0.3", "maxpool 2/2",
        "conv5 32→64 stride1 pad2", "relu", "dropout 0.3", "maxpool 2/2",
        "flatten", f"linear {features}→256", "relu", "dropout 0.5", "linear 256→5",
    ]  # fmt: skip
    assert architecture(build("utk_classifier", side, num_classes=5)) == expected


@pytest.mark.parametrize(("side", "features"), [(224, 384 * 6 * 6), (227, 384 * 6 * 6), (64, 384)])
def test_adience_classifier_is_levi_and_hassner_with_batchnorm(side, features):
    expected = [
        "normalize",
        "conv7 3→96 stride4 pad0", "bn", "relu", "maxpool 3/2",
        "conv5 96→256 stride1 pad2", "bn", "relu", "maxpool 3/2",
        "conv3 256→384 stride1 pad1", "bn", "relu", "maxpool 3/2",
        "flatten", f"linear {features}→512", "relu", "dropout 0.5", "linear 512→512", "relu", "dropout 0.5",
        "linear 512→8",
    ]  # fmt: skip
    model = build("adience_classifier", side, num_classes=8)
    assert architecture(model) == expected
    assert model.eval()(torch.rand(1, 3, side, side)).shape == (1, 8)


def test_head_sizing_leaves_batchnorm_statistics_untouched():
    model = build("deep_cnn", 32)
    batchnorm = next(layer for layer in leaf_layers(model) if isinstance(layer, nn.BatchNorm2d))
    assert batchnorm.num_batches_tracked == 0 and model.training


def test_too_small_images_are_refused_by_name():
    with pytest.raises(ValueError, match="deep_cnn cannot take 3×16×16 images"):
        build("deep_cnn", 16)


# ---------------------------------------------------------------- PyramidNet


@pytest.mark.parametrize(
    ("config", "alpha", "final_width", "unit_layers"),
    [
        ("pyramidnet", 64, 16 + 64, ["bn", "conv3", "bn", "relu", "conv3", "bn"]),
        ("pyramidnet_bottleneck", 48, (16 + 48) * 4,
         ["bn", "conv1", "bn", "relu", "conv3", "bn", "relu", "conv1", "bn"]),
    ],
)
def test_pyramidnet_widens_additively_at_every_unit(config, alpha, final_width, unit_layers):
    model = build(config, 32, num_classes=100)
    units = [module for module in model.modules() if isinstance(module, PyramidUnit)]
    assert len(units) == 54  # (110 − 2) / 2 basic, (164 − 2) / 3 bottleneck

    expansion = 4 if config == "pyramidnet_bottleneck" else 1
    widths = [unit.out_channels // expansion for unit in units]
    assert widths == [round(16 + alpha * k / 54) for k in range(1, 55)]
    assert all(step in (0, 1, 2) for step in torch.tensor([16, *widths]).diff().tolist())
    assert units[-1].out_channels == final_width
    assert model.head[-1].in_features == final_width and model.head[-1].out_features == 100

    for unit in units:
        assert [describe(layer).split(" ")[0] for layer in unit.residual] == unit_layers
    strides = [max(layer.stride[0] for layer in unit.residual if isinstance(layer, nn.Conv2d)) for unit in units]
    assert [index for index, stride in enumerate(strides) if stride == 2] == [18, 36]  # three stages of 18


def test_pyramid_unit_shortcut_is_pooled_and_zero_padded_with_no_relu_after_the_sum():
    unit = PyramidUnit(16, 19, stride=2, bottleneck=False).eval()
    nn.init.zeros_(unit.residual[-1].weight)  # the residual branch now adds exactly zero
    x = torch.randn(2, 16, 9, 9)
    out = unit(x)
    assert out.shape == (2, 19, 5, 5)
    torch.testing.assert_close(out[:, :16], nn.functional.avg_pool2d(x, 2, ceil_mode=True))
    assert (out[:, :16] < 0).any()  # negative values survive: no ReLU after the addition
    assert torch.equal(out[:, 16:], torch.zeros(2, 3, 5, 5))


@pytest.mark.parametrize(
    ("depth", "alpha", "bottleneck", "num_classes", "parameters"),
    [(110, 48, False, 10, 1_772_706), (110, 48, False, 100, 1_778_556), (110, 84, False, 10, 3_904_446),
     (164, 270, True, 10, 27_216_021)],
)
def test_pyramidnet_matches_published_parameter_counts(depth, alpha, bottleneck, num_classes, parameters):
    """Counts of osmr/imgclsmob's PyramidNets, which reproduce the authors' PyTorch code."""
    model = build("pyramidnet", 32, f"model.depth={depth}", f"model.alpha={alpha}", f"model.bottleneck={bottleneck}",
                  num_classes=num_classes)
    assert parameter_count(model) == parameters


def test_pyramidnet_rejects_a_depth_that_does_not_split_into_three_stages():
    with pytest.raises(ValueError, match="depth=100"):
        build("pyramidnet", 32, "model.depth=100")


def test_input_size_resizes_inside_the_model_so_alexnet_takes_cifar_images():
    with pytest.raises(ValueError, match=r"alexnet needs images of at least 63×63"):
        models.alexnet((3, 32, 32), 10, {"mean": [0.5] * 3, "std": [0.5] * 3})
    model = models.alexnet((3, 32, 32), 10, {"mean": [0.5] * 3, "std": [0.5] * 3}, input_size=64)
    assert isinstance(model[1], torch.nn.Upsample)
    x = torch.rand(2, 3, 32, 32, requires_grad=True)
    model(x).sum().backward()
    assert x.grad.shape == (2, 3, 32, 32)      # gradients, hence attacks, live in the 32×32 pixels
