"""A search space defined in the tests, registered the way a user's plugin registers one.

Eight tiny conv nets: ``c<width>-d<depth>`` with width in (4, 8, 16, 32) and depth in (1, 2). arch_id
order: width-major. Listed under ``plugins: [toy_space]`` (or named ``space: toy_space:ToySpace``).
"""

from torch import nn

from gradsign import spaces
WIDTHS = (4, 8, 16, 32)
DEPTHS = (1, 2)


@spaces.register("toy")
class ToySpace(spaces.Space):
    name = "toy"

    def __len__(self) -> int:
        return len(WIDTHS) * len(DEPTHS)

    def arch(self, arch_id: int) -> str:
        if not 0 <= int(arch_id) < len(self):
            raise ValueError(f"toy arch_id must be in [0, {len(self)}), got {arch_id}")
        w, d = divmod(int(arch_id), len(DEPTHS))
        return f"c{WIDTHS[w]}-d{DEPTHS[d]}"

    def arch_id(self, arch: str) -> int:
        try:
            width, depth = arch.strip().split("-")
            return WIDTHS.index(int(width[1:])) * len(DEPTHS) + DEPTHS.index(int(depth[1:]))
        except (ValueError, AttributeError, IndexError):
            raise ValueError(f"malformed toy arch {arch!r}: expected c<width>-d<depth>") from None

    def build(self, arch: str, num_classes: int) -> nn.Module:
        w, d = divmod(self.arch_id(arch), len(DEPTHS))
        width, depth = WIDTHS[w], DEPTHS[d]
        layers, c = [], 3
        for _ in range(depth):
            layers += [nn.Conv2d(c, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()]
            c = width
        return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, num_classes))
