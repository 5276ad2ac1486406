"""LSR's networks in PyTorch (imports only torch; never picks a device).

Paper symbol -> name: E^s ``style_encoder`` (Encoder), E^l ``layout_encoder`` (Encoder),
G^l ``layout_generator`` (LayoutGenerator), G^s ``image_generator`` (ImageGenerator),
D ``discriminator`` (Discriminator), z^s ``z_style``, z^l ``z_layout``, K ``num_shots``,
the 68-landmark drawing ``contour``, G^l's 19 logits ``layout_logits`` and their softmax
``layout``.
"""

from thead.nn.discriminator import Discriminator
from thead.nn.encoder import Encoder
from thead.nn.generator import ImageGenerator
from thead.nn.layout import LayoutGenerator

__all__ = ["Discriminator", "Encoder", "ImageGenerator", "LayoutGenerator"]
