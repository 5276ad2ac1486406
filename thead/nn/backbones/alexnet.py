"""AlexNet's convolutional trunk, laid out as torchvision's ``alexnet`` so its ImageNet state dict
(``alexnet-owt-7be5be79.pth``) loads as-is; the backbone of LPIPS v0.1 (ref §7).

``features`` keeps torchvision's module indices (0 conv1, 1 relu, 2 pool, 3 conv2, 4 relu,
5 pool, 6 conv3, 7 relu, 8 conv4, 9 relu, 10 conv5, 11 relu, 12 pool), so the keys are
``features.{0,3,6,8,10}.{weight,bias}``. The classifier is not built: LPIPS reads only the five
ReLU outputs, and ``load_torchvision_state`` drops the ``classifier.*`` tensors on purpose.
"""

from __future__ import annotations

from torch import Tensor, nn

# (in, out, kernel, stride, padding) of conv1..conv5, torchvision's "one weird trick" variant.
ALEXNET_CONVS = ((3, 64, 11, 4, 2), (64, 192, 5, 1, 2), (192, 384, 3, 1, 1), (384, 256, 3, 1, 1), (256, 256, 3, 1, 1))
# Index in ``features`` after which each LPIPS tap (relu1..relu5) is read.
ALEXNET_TAPS = (1, 4, 7, 9, 11)
ALEXNET_CHANNELS = tuple(c[1] for c in ALEXNET_CONVS)


class AlexNetFeatures(nn.Module):
    """AlexNet conv1..conv5 with ReLUs: x [N, 3, H, W] (already normalised) -> the five ReLU
    outputs, [N, 64, H/4, W/4] ... [N, 256, H/16, W/16] (for 224: 55, 27, 13, 13, 13 px)."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for i, (cin, cout, k, s, p) in enumerate(ALEXNET_CONVS):
            if i in (1, 2):  # max-pool before conv2 and conv3
                layers.append(nn.MaxPool2d(kernel_size=3, stride=2))
            layers += [nn.Conv2d(cin, cout, k, stride=s, padding=p), nn.ReLU()]
        layers.append(nn.MaxPool2d(kernel_size=3, stride=2))
        self.features = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> list[Tensor]:
        taps = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in ALEXNET_TAPS:
                taps.append(x)
                if len(taps) == len(ALEXNET_TAPS):
                    break
        return taps


def torchvision_features_state(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """torchvision ``alexnet`` state dict -> ``AlexNetFeatures``'s (the classifier dropped)."""
    return {k: v for k, v in state.items() if not k.startswith("classifier.")}
