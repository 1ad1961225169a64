import pytest
import torch
import torch.nn as nn
from safetensors.torch import save_file

from camlens.errors import CamlensValueError
from camlens.models.architectures import architectures, build_body, parse, smallcnn


def test_parse_backbone_specs():
    assert parse("resnet18") == ("torchvision", "resnet18")
    assert parse("smallcnn") == ("camlens", "smallcnn")
    assert parse("timm:convnext_atto") == ("timm", "convnext_atto")
    assert "smallcnn" in architectures()
    with pytest.raises(CamlensValueError, match="backbone must be a torchvision model name"):
        parse("keras:resnet")


def test_smallcnn_gives_quarter_resolution_maps():
    body = build_body("camlens:smallcnn", None, {"width": 8}, 64)
    assert body.features == 32 and body.mean == (0.5, 0.5, 0.5)
    assert body.module(torch.zeros(1, 3, 64, 64)).shape == (1, 32, 16, 16)
    gray = build_body("camlens:smallcnn", None, {"channels": 1, "width": 8}, 64)
    assert gray.mean == (0.5,) and gray.module[0][0].in_channels == 1


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_weights_from_a_file(tmp_path, suffix):
    torch.manual_seed(1)
    source = smallcnn(width=8)
    path = tmp_path / f"w{suffix}"
    if suffix == ".pth":
        torch.save(source.state_dict(), path)
    else:
        save_file(source.state_dict(), str(path))
    body = build_body("camlens:smallcnn", str(path), {"width": 8}, 32)
    assert torch.equal(body.module.block1[0].weight, source.block1[0].weight)
    with pytest.raises(CamlensValueError, match=r"do not fit the backbone"):
        build_body("camlens:smallcnn", str(path), {"width": 16}, 32)


def test_torchvision_bodies_end_where_the_head_reads():
    vgg = build_body("vgg11", None, None, 64)
    assert isinstance(vgg.module.features[-1], nn.ReLU)  # the last max-pool is cut
    assert vgg.features == 512 and vgg.mean == (0.485, 0.456, 0.406)
    densenet = build_body("densenet121", None, None, 64)
    assert list(dict(densenet.module.named_children())) == ["features", "relu"]
