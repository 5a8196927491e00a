"""A plain 2D U-Net for phase segmentation, and device selection.

The network is just a :class:`torch.nn.Module` (after MONAI's ``basic_unet``): each level is two
conv-norm-ReLU blocks, going down by 2x2 max-pooling and up by a transposed convolution (or bilinear
upsampling), with the encoder's features concatenated at every level. It takes any image size: ``forward``
pads the input to a multiple of ``2 ** (depth - 1)`` (at least twice that) with reflect padding (replicate for
images too small to reflect) and crops the logits back.

Output channel ``i`` is the score of phase code ``phases.codes[i]`` of the phase table the model is trained for.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from core.errors import ReactomoError

__all__ = ["UNetConfig", "UNet", "UNetEnsemble", "members_of", "build_unet", "select_device", "device_summary"]

Norm = Literal["batch", "instance", "group"]
Up = Literal["transpose", "bilinear"]
_NORMS = ("batch", "instance", "group")
_UPS = ("transpose", "bilinear")
_MAX_DEPTH = 8
_MAX_WIDTH = 1024


def _did_you_mean(value: Any, options: tuple[str, ...]) -> str:
    hint = difflib.get_close_matches(str(value), options, n=1)
    return f" (did you mean {hint[0]!r}?)" if hint else ""


@dataclass(frozen=True)
class UNetConfig:
    """Architecture of a :class:`UNet`; frozen so it hashes cleanly as a cache key.

    Attributes
    ----------
    in_channels : int
        Channels of the input image: 1 for a grey-value CT slice alone; ``2k + 1`` for the slice with its ``k``
        neighbouring slices on each side (2.5D: CT noise is independent from slice to slice while the rock is
        continuous, so the neighbours sharpen what one slice shows; see :func:`core.network.inference.context_slices`).
    n_classes : int
        Number of phases; output channel ``i`` belongs to phase code ``phases.codes[i]``.
    width : int
        Channels of the first level; each deeper level doubles it.
    depth : int
        Number of levels (2..8), so the image is pooled ``depth - 1`` times.
    dropout : float
        Dropout probability (``Dropout2d``) after each level's convolutions, in ``[0, 1)``.
    norm : {"batch", "instance", "group"}
        Normalisation after each convolution.

        ============  =============================================================
        ``batch``     BatchNorm2d: the usual choice for batches of 8 or more patches
        ``instance``  InstanceNorm2d (affine): independent of the batch size
        ``group``     GroupNorm with up to 8 groups: independent of the batch size
        ============  =============================================================
    up : {"transpose", "bilinear"}
        Upsampling: a learned 2x2 transposed convolution, or bilinear interpolation followed by a 1x1 conv.
    """

    in_channels: int = 1
    n_classes: int = 4
    width: int = 16
    depth: int = 4
    dropout: float = 0.0
    norm: Norm = "batch"
    up: Up = "transpose"

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise :class:`ReactomoError` naming the first bad field and what would work."""
        for name, low, high in (("in_channels", 1, 64), ("n_classes", 2, 255), ("width", 1, _MAX_WIDTH), ("depth", 2, _MAX_DEPTH)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not low <= v <= high:
                raise ReactomoError(f"U-Net {name} is {v!r}; use an integer from {low} to {high}.")
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)) or not 0.0 <= self.dropout < 1.0:
            raise ReactomoError(f"U-Net dropout is {self.dropout!r}; use a number in [0, 1), e.g. 0.1.")
        if self.norm not in _NORMS:
            raise ReactomoError(f"U-Net norm is {self.norm!r}; use one of {list(_NORMS)}{_did_you_mean(self.norm, _NORMS)}.")
        if self.up not in _UPS:
            raise ReactomoError(f"U-Net up is {self.up!r}; use one of {list(_UPS)}{_did_you_mean(self.up, _UPS)}.")
        if self.width * 2 ** (self.depth - 1) > 8 * _MAX_WIDTH:
            raise ReactomoError(
                f"U-Net width {self.width} with depth {self.depth} gives {self.width * 2 ** (self.depth - 1)} channels at the "
                f"bottom; reduce the width or the depth so that stays at most {8 * _MAX_WIDTH}."
            )

    @property
    def multiple(self) -> int:
        """Height and width are padded inside ``forward`` to a multiple of this (``2 ** (depth - 1)``), at least twice it."""
        return 2 ** (self.depth - 1)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict of the fields."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "UNetConfig":
        """Inverse of :meth:`to_dict`; unknown fields are refused (they would be silently ignored otherwise)."""
        if not isinstance(d, dict):
            raise ReactomoError(f"A U-Net config is a dict of fields; got {type(d).__name__}.")
        allowed = {f.name for f in fields(cls)}
        unknown = set(d) - allowed
        if unknown:
            raise ReactomoError(f"Unknown U-Net config field(s) {sorted(unknown)}; allowed fields are {sorted(allowed)}.")
        return cls(**d)


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    return nn.GroupNorm(math.gcd(channels, 8), channels)


class _TwoConv(nn.Sequential):
    """(3x3 conv, norm, ReLU) x 2, then optional dropout: ``(N, cin, H, W) -> (N, cout, H, W)``."""

    def __init__(self, cin: int, cout: int, *, norm: str, dropout: float) -> None:
        layers: list[nn.Module] = []
        for c in (cin, cout):
            # No conv bias: the norm right after has its own shift.
            layers += [nn.Conv2d(c, cout, 3, padding=1, bias=False), _norm(norm, cout), nn.ReLU(inplace=True)]
        if dropout > 0:
            layers.append(nn.Dropout2d(dropout))
        super().__init__(*layers)


class _Up(nn.Module):
    """Upsample ``(N, cin, h, w)`` by 2, concatenate the skip ``(N, cin // 2, 2h, 2w)``, two convs to ``cout``."""

    def __init__(self, cin: int, cout: int, *, norm: str, dropout: float, up: str) -> None:
        super().__init__()
        half = cin // 2
        if up == "transpose":
            self.up: nn.Module = nn.ConvTranspose2d(cin, half, 2, stride=2)
        else:
            self.up = nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False), nn.Conv2d(cin, half, 1))
        self.conv = _TwoConv(half * 2, cout, norm=norm, dropout=dropout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([skip, self.up(x)], dim=1))


class UNet(nn.Module):
    """Plain 2D U-Net returning per-pixel class logits for images of any size.

    Parameters
    ----------
    config : UNetConfig
        Architecture; kept as ``self.config``.

    Examples
    --------
    >>> net = UNet(UNetConfig(n_classes=4, width=4, depth=3)).eval()
    >>> net(torch.zeros(2, 1, 17, 23)).shape
    torch.Size([2, 4, 17, 23])
    """

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        if not isinstance(config, UNetConfig):
            raise ReactomoError(f"UNet needs a UNetConfig; got {type(config).__name__}.")
        self.config = config
        chans = [config.width * 2**i for i in range(config.depth)]
        kw = dict(norm=config.norm, dropout=float(config.dropout))
        self.down = nn.ModuleList([_TwoConv(config.in_channels, chans[0], **kw)])
        self.down.extend(_TwoConv(chans[i - 1], chans[i], **kw) for i in range(1, config.depth))
        self.up = nn.ModuleList(_Up(chans[i], chans[i - 1], up=config.up, **kw) for i in range(config.depth - 1, 0, -1))
        self.head = nn.Conv2d(chans[0], config.n_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits per pixel.

        Parameters
        ----------
        x : torch.Tensor, shape (N, in_channels, H, W), float
            Normalised images; any ``H, W >= 1``.

        Returns
        -------
        torch.Tensor, shape (N, n_classes, H, W)
            Unnormalised scores (apply ``softmax(dim=1)`` for probabilities, ``argmax(dim=1)`` for class indices).
        """
        if x.ndim != 4 or x.shape[1] != self.config.in_channels:
            raise ReactomoError(
                f"UNet input has shape {tuple(x.shape)}; it needs (N, {self.config.in_channels}, H, W)."
            )
        h, w = x.shape[-2:]
        m = self.config.multiple
        # Round up to a multiple of m, and to at least 2m so the bottom level keeps 2x2 pixels (instance and
        # group norm need more than one pixel per channel).
        ph, pw = max(-(-h // m), 2) * m - h, max(-(-w // m), 2) * m - w
        if ph or pw:
            # Reflect keeps texture at the border; it needs pad < size, so tiny images fall back to replicate.
            mode = "reflect" if ph < h and pw < w else "replicate"
            x = F.pad(x, (0, pw, 0, ph), mode=mode)
        skips = []
        for i, block in enumerate(self.down):
            if i:
                x = F.max_pool2d(x, 2)
            x = block(x)
            skips.append(x)
        x = skips.pop()
        for block in self.up:
            x = block(x, skips.pop())
        return self.head(x)[..., :h, :w]


class UNetEnsemble(nn.Module):
    """Several U-Nets of one config, trained apart, read as one network: the mean of their class probabilities.

    ``forward`` returns the logarithm of the members' mean softmax, so a softmax of its output (what inference does)
    gives exactly the averaged probabilities, and its arg-max is the averaged vote. Everything that reads a network's
    ``config`` (input channels, classes, the size multiple) reads the members' shared one.

    Parameters
    ----------
    members : sequence of UNet
        Two or more networks built from the same :class:`UNetConfig`.
    """

    def __init__(self, members: "list[UNet] | tuple[UNet, ...]") -> None:
        super().__init__()
        members = list(members)
        if len(members) < 2 or not all(isinstance(m, UNet) for m in members):
            raise ReactomoError(f"An ensemble needs two or more U-Nets; got {len(members)} network(s).")
        if any(m.config != members[0].config for m in members[1:]):
            raise ReactomoError("The networks of an ensemble must share one U-Net config (width, depth, channels, "
                                "classes); train every member with the same settings.")
        self.config = members[0].config
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logp = torch.stack([F.log_softmax(m(x).float(), dim=1) for m in self.members])
        return torch.logsumexp(logp, dim=0) - math.log(len(self.members))


def members_of(model: nn.Module) -> int:
    """How many networks ``model`` averages: the members of a :class:`UNetEnsemble`, else 1."""
    return len(model.members) if isinstance(model, UNetEnsemble) else 1


def build_unet(config: UNetConfig) -> UNet:
    """A freshly initialised :class:`UNet` for ``config`` (seed with ``torch.manual_seed`` for reproducibility)."""
    return UNet(config)


_DEVICES = ("auto", "cpu", "cuda")


def select_device(prefer: str = "auto") -> torch.device:
    """The torch device to train or predict on.

    Parameters
    ----------
    prefer : {"auto", "cpu", "cuda"} or "cuda:N"
        ``"auto"`` takes CUDA when available, else the CPU.

    Returns
    -------
    torch.device

    Raises
    ------
    ReactomoError
        For an unknown name, or ``"cuda"`` on a machine without a usable GPU.
    """
    key = str(prefer).strip().lower()
    if key == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if key == "cpu":
        return torch.device("cpu")
    if key == "cuda" or (key.startswith("cuda:") and key[5:].isdigit()):
        if not torch.cuda.is_available():
            raise ReactomoError(f"Device {prefer!r} was asked for but no CUDA GPU is available here; use 'auto' or 'cpu'.")
        dev = torch.device(key)
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ReactomoError(
                f"Device {prefer!r} does not exist; this machine has {torch.cuda.device_count()} GPU(s), cuda:0 to "
                f"cuda:{torch.cuda.device_count() - 1}."
            )
        return dev
    raise ReactomoError(f"Unknown device {prefer!r}; use one of {list(_DEVICES)} or 'cuda:N'{_did_you_mean(key, _DEVICES)}.")


def device_summary(device: torch.device | str) -> str:
    """One line describing ``device`` for display, e.g. ``"CUDA: NVIDIA H100 (80 GB)"`` or ``"CPU (2 threads)"``."""
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        idx = device.index if device.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(idx)
        return f"CUDA: {props.name} ({props.total_memory / 1024**3:.0f} GB, mixed precision available)"
    if device.type == "cpu":
        return f"CPU ({torch.get_num_threads()} threads)"
    return str(device)
