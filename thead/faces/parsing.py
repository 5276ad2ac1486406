"""The face-parsing oracle for layout pre-training (ref §1.4), in plain torch.

The authors labelled every training frame with a 19-class CelebAMask-HQ parser run at two
resolutions and merged (``merge_segmaps``); G^l learns to predict those label maps. The
authors' parser ("parsenet" ``model.pth``) has no public weights with a known hash, so thead
uses the widely used CelebAMask-HQ BiSeNet of zllrunning/face-parsing.PyTorch
(``79999_iter.pth``, ResNet-18 backbone), whose label order differs and is mapped here
(``BISENET_TO_CELEBAMASK``). paper≠code: a different parser than the authors', same classes.

Weights: the publisher's Google Drive file, mirrored byte-identical on the Hub; sha256 and
size pinned below. The file is a torch pickle of tensors; it is read with
``torch.load(weights_only=True)`` (no code runs) after the hash matched.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from thead._hash import sha256_file
from thead.download import Asset
from thead.config import LAYOUT_CLASSES as NUM_CLASSES
from thead.errors import WeightsError

# CelebAMask-HQ order as the authors use it (ref §1.4): index -> name.
CELEBAMASK_LABELS = (
    "background", "skin", "nose", "eye_g", "l_eye", "r_eye", "l_brow", "r_brow", "l_ear", "r_ear",
    "mouth", "u_lip", "l_lip", "hair", "hat", "ear_r", "neck_l", "neck", "cloth",
)  # fmt: skip
# zllrunning/face-parsing.PyTorch order (its prepropess_data.py attribute list, 0 = background).
BISENET_LABELS = (
    "background", "skin", "l_brow", "r_brow", "l_eye", "r_eye", "eye_g", "l_ear", "r_ear", "ear_r",
    "nose", "mouth", "u_lip", "l_lip", "neck", "neck_l", "cloth", "hair", "hat",
)  # fmt: skip
BISENET_TO_CELEBAMASK = np.array([CELEBAMASK_LABELS.index(name) for name in BISENET_LABELS], np.uint8)


@dataclass(frozen=True)
class ParserWeights:
    """Where the parser's published weights live and what they must hash to."""

    filename: str = "79999_iter.pth"
    sha256: str = "468e13ca13a9b43cc0881a9f99083a430e9c0a38abd935431d1c28ee94b26567"
    size_bytes: int = 53_289_463
    hub_repo: str = "vivym/face-parsing-bisenet"  # byte-identical mirror of the Drive file
    hub_revision: str = "768606b84908769d31ddd78b2e1105319839edfa"
    publisher_url: str = "https://drive.google.com/open?id=154JgKpzCPW82qINcVieuPH3fZ2e0P812"


    def asset(self) -> Asset:
        """The file for ``thead.download``: the Hub mirror at the pinned revision, then the
        publisher's Drive file; cached under ``faces/``."""
        return Asset(
            name="face parser weights (BiSeNet, face-parsing.PyTorch)",
            filename=self.filename,
            urls=(
                f"https://huggingface.co/{self.hub_repo}/resolve/{self.hub_revision}/{self.filename}",
                "https://drive.google.com/uc?id=" + self.publisher_url.rsplit("id=", 1)[-1],
            ),
            sha256=self.sha256,
            subdir="faces",
        )


PARSER_WEIGHTS = ParserWeights()
WEIGHTS_ENV = "THEAD_FACE_PARSER_WEIGHTS"  # a local copy of 79999_iter.pth


# ------------------------------------------------------------------------------- network
# zllrunning/face-parsing.PyTorch model.py + resnet.py; module names match its state dict.


class ConvBNReLU(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, ks: int = 3, stride: int = 1, padding: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, ks, stride, padding, bias=False)
        self.bn = nn.BatchNorm2d(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class BasicBlock(nn.Module):
    """ResNet basic block: relu(shortcut(x) + bn2(conv2(relu(bn1(conv1(x))))))."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.downsample = None
        if in_ch != out_ch or stride != 1:
            self.downsample = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(shortcut + residual)


class Resnet18(nn.Module):
    """ResNet-18 trunk returning the 1/8, 1/16 and 1/32 feature maps (128, 256, 512 ch)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        widths = ((64, 64, 1), (64, 128, 2), (128, 256, 2), (256, 512, 2))
        for i, (cin, cout, stride) in enumerate(widths, start=1):
            self.add_module(f"layer{i}", nn.Sequential(BasicBlock(cin, cout, stride), BasicBlock(cout, cout)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.layer1(self.maxpool(F.relu(self.bn1(self.conv1(x)))))
        feat8 = self.layer2(x)
        feat16 = self.layer3(feat8)
        return feat8, feat16, self.layer4(feat16)


class AttentionRefinementModule(nn.Module):
    """feat = conv(x); out = feat · sigmoid(bn(conv1x1(avgpool(feat))))."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.conv = ConvBNReLU(in_ch, out_ch)
        self.conv_atten = nn.Conv2d(out_ch, out_ch, 1, bias=False)
        self.bn_atten = nn.BatchNorm2d(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.conv(x)
        return feat * torch.sigmoid(self.bn_atten(self.conv_atten(F.adaptive_avg_pool2d(feat, 1))))


class ContextPath(nn.Module):
    """ResNet-18 + attention refinement at 1/16 and 1/32 + global context, up to 1/8."""

    def __init__(self):
        super().__init__()
        self.resnet = Resnet18()
        self.arm16 = AttentionRefinementModule(256, 128)
        self.arm32 = AttentionRefinementModule(512, 128)
        self.conv_head32 = ConvBNReLU(128, 128)
        self.conv_head16 = ConvBNReLU(128, 128)
        self.conv_avg = ConvBNReLU(512, 128, ks=1, padding=0)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        feat8, feat16, feat32 = self.resnet(x)
        avg = self.conv_avg(F.adaptive_avg_pool2d(feat32, 1))
        feat32_sum = self.arm32(feat32) + F.interpolate(avg, feat32.shape[2:], mode="nearest")
        feat32_up = self.conv_head32(F.interpolate(feat32_sum, feat16.shape[2:], mode="nearest"))
        feat16_sum = self.arm16(feat16) + feat32_up
        feat16_up = self.conv_head16(F.interpolate(feat16_sum, feat8.shape[2:], mode="nearest"))
        return feat8, feat16_up, feat32_up


class FeatureFusionModule(nn.Module):
    """feat = convblk([fsp, fcp]); out = feat + feat · sigmoid(conv2(relu(conv1(avgpool(feat)))))."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.convblk = ConvBNReLU(in_ch, out_ch, ks=1, padding=0)
        self.conv1 = nn.Conv2d(out_ch, out_ch // 4, 1, bias=False)
        self.conv2 = nn.Conv2d(out_ch // 4, out_ch, 1, bias=False)

    def forward(self, fsp: torch.Tensor, fcp: torch.Tensor) -> torch.Tensor:
        feat = self.convblk(torch.cat([fsp, fcp], dim=1))
        atten = torch.sigmoid(self.conv2(F.relu(self.conv1(F.adaptive_avg_pool2d(feat, 1)))))
        return feat + feat * atten


class BiSeNetOutput(nn.Module):
    def __init__(self, in_ch: int, mid_ch: int, num_classes: int):
        super().__init__()
        self.conv = ConvBNReLU(in_ch, mid_ch)
        self.conv_out = nn.Conv2d(mid_ch, num_classes, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_out(self.conv(x))


class BiSeNet(nn.Module):
    """BiSeNet face parser (Yu et al. 2018; zllrunning's variant: the spatial path is the
    ResNet 1/8 feature). Input [N, 3, H, W] ImageNet-normalised RGB (H, W multiples of 32);
    output [N, 19, H, W] logits in BiSeNet label order. The two auxiliary heads
    (``conv_out16``, ``conv_out32``) exist for the checkpoint's keys; inference uses the main one."""

    def __init__(self, num_classes: int = NUM_CLASSES):
        super().__init__()
        self.cp = ContextPath()
        self.ffm = FeatureFusionModule(256, 256)
        self.conv_out = BiSeNetOutput(256, 256, num_classes)
        self.conv_out16 = BiSeNetOutput(128, 64, num_classes)
        self.conv_out32 = BiSeNetOutput(128, 64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat8, feat_cp8, _ = self.cp(x)
        logits = self.conv_out(self.ffm(feat8, feat_cp8))
        return F.interpolate(logits, x.shape[2:], mode="bilinear", align_corners=True)


# --------------------------------------------------------------------------- the merge rule

# ref §1.4: classes whose 512-pass labels win (fine parts), and those taken from the 256 pass.
FINE_CLASSES = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 15, 16)
HAIR, NECK, CLOTH = 13, 17, 18


def resize_nearest_cv(labels: np.ndarray, size: int) -> np.ndarray:
    """OpenCV ``INTER_NEAREST`` (source index ``floor(i * src/dst)``), which the authors used
    for label maps; PIL's nearest samples pixel centres and picks different rows."""
    h, w = labels.shape[:2]
    ys = np.minimum(np.floor(np.arange(size) * (h / size)).astype(int), h - 1)
    xs = np.minimum(np.floor(np.arange(size) * (w / size)).astype(int), w - 1)
    return labels[ys[:, None], xs[None, :]]


def merge_segmaps(seg256: np.ndarray, seg512: np.ndarray, out_size: int = 224) -> np.ndarray:
    """The authors' two-scale merge (ref §1.4), labels in CelebAMask-HQ order.

    seg256: uint8 [256, 256] labels from the 256-px pass; seg512: uint8 [512, 512] from the
    512-px pass. On a 256 canvas: background; hair (13) from the 256 pass; every fine class
    (1-12, 14-16) from the 512 pass (nearest-downsized) overwrites; neck (17) and cloth (18)
    from the 256 pass overwrite last. Returns uint8 [out_size, out_size] (OpenCV nearest).
    """
    if seg256.shape != (256, 256) or seg512.shape != (512, 512):
        raise ValueError(f"merge_segmaps needs 256x256 and 512x512 maps, got {seg256.shape} and {seg512.shape}")
    small512 = resize_nearest_cv(seg512, 256)
    merged = np.zeros((256, 256), np.uint8)
    merged[seg256 == HAIR] = HAIR
    fine = np.isin(small512, FINE_CLASSES)
    merged[fine] = small512[fine]
    for cls in (NECK, CLOTH):
        merged[seg256 == cls] = cls
    return resize_nearest_cv(merged, out_size)


# ------------------------------------------------------------------------------- the parser

_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


class FaceParser:
    """Label maps for RGB frames.

    ``parse(image uint8 HxWx3, size) -> uint8 [size, size]`` labels in CelebAMask-HQ order;
    ``segmap(image) -> uint8 [H, W]`` the authors' merged map (256 and 512 passes, ref §1.4),
    saved as ``NNNNN_segmap_merged.png``.
    """

    def __init__(self, net: BiSeNet, device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self.net = net.to(self.device).eval()
        self._to_celebamask = torch.from_numpy(BISENET_TO_CELEBAMASK.astype(np.int64)).to(self.device)

    @torch.no_grad()
    def parse(self, image: np.ndarray, size: int) -> np.ndarray:
        # ref §1.4: the frame is resized with PIL NEAREST to each pass's size.
        resized = np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.NEAREST))
        x = torch.from_numpy(np.array(resized)).to(self.device).permute(2, 0, 1)[None].float() / 255.0
        # paper≠code: BiSeNet's own ImageNet normalisation, not the authors' parser's (x-0.5)/0.5.
        x = (x - _MEAN.to(self.device)) / _STD.to(self.device)
        labels = self.net(x)[0].argmax(0)
        return self._to_celebamask[labels].to(torch.uint8).cpu().numpy()

    def segmap(self, image: np.ndarray) -> np.ndarray:
        return merge_segmaps(self.parse(image, 256), self.parse(image, 512), out_size=image.shape[0])


# ------------------------------------------------------------------------------- weights


def find_parser_weights(weights: ParserWeights = PARSER_WEIGHTS) -> Path | None:
    """A local copy of the parser's weights, or None: ``$THEAD_FACE_PARSER_WEIGHTS``, else
    thead's cache (from an earlier ``download_parser_weights``), else the Hub cache (where
    earlier versions of thead put it). Never touches the network."""
    env = os.environ.get(WEIGHTS_ENV)
    if env:
        return Path(env) if Path(env).is_file() else None
    cached = weights.asset().cached_path()
    if cached.is_file():
        return cached
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(weights.hub_repo, weights.filename, revision=weights.hub_revision)
    return Path(cached) if isinstance(cached, str) else None


def download_parser_weights(weights: ParserWeights = PARSER_WEIGHTS) -> Path:
    """Fetch the weights into thead's cache (``thead.download``: the Hub mirror at the pinned
    revision, else the publisher's Drive file), sha256-verified."""
    from thead.download import DownloadError, resolve_asset

    found = find_parser_weights(weights)
    if found is not None:
        verify_weights(found, weights.sha256)
        return found
    try:
        return resolve_asset(weights.asset())
    except DownloadError as e:  # offline, mirror gone: one line, with where else to get the file
        raise WeightsError(
            f"cannot download the face parser weights ({str(e).split(';')[0]}); "
            f"get {weights.filename} from {weights.publisher_url} and set {WEIGHTS_ENV}"
        ) from None


def verify_weights(path: Path, sha256: str) -> None:
    digest = sha256_file(path)
    if digest != sha256:
        raise WeightsError(f"{path} has sha256 {digest[:12]}..., expected {sha256[:12]}... (wrong or corrupt file)")


def load_face_parser(
    path: str | os.PathLike | None = None,
    *,
    device: str | torch.device = "cpu",
    sha256: str = PARSER_WEIGHTS.sha256,
) -> FaceParser:
    """Build the parser from ``path`` (default: ``find_parser_weights()``).

    The file must hash to ``sha256``; loading is strict (a missing or unexpected key is an
    error). Raises ``WeightsError`` when no weights are found or they do not match.
    """
    path = Path(path) if path is not None else find_parser_weights()
    if path is None or not path.is_file():
        raise WeightsError(
            f"face parser weights not found; run download_parser_weights() or get {PARSER_WEIGHTS.filename} "
            f"from {PARSER_WEIGHTS.publisher_url} and set {WEIGHTS_ENV}"
        )
    verify_weights(path, sha256)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise WeightsError(f"{path} is not a readable torch state dict: {e}") from None
    state = {k.removeprefix("module."): v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    net = BiSeNet()
    expected = {k for k in net.state_dict() if not k.endswith("num_batches_tracked")}
    missing, unexpected = sorted(expected - state.keys()), sorted(state.keys() - expected)
    if missing or unexpected:
        raise WeightsError(f"{path} does not fit BiSeNet: missing {missing[:3]}, unexpected {unexpected[:3]}")
    try:
        net.load_state_dict(state, strict=False)  # only num_batches_tracked may be absent
    except RuntimeError as e:
        raise WeightsError(f"{path} does not fit BiSeNet: {str(e).splitlines()[-1].strip()}") from None
    return FaceParser(net, device)


def parser_available() -> bool:
    """The parser's weights are present locally (no download is attempted)."""
    return find_parser_weights() is not None
