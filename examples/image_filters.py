"""A parallel batch flow over (image, filter) pairs: load -> filter -> save, as real PNG files.

``@parallel_batch(flow=..., limit=4)`` runs the sub-flow per pair, up to four at once; its steps
get ``image`` and ``filter_name`` by name and, as sync Pillow functions, run in worker threads.
Inputs are drawn with Pillow; all files go to ``out_dir`` (examples/out/images). No remote call
to simulate here: the work is real and deterministic. Needs Pillow (``flowfn[examples]``).
Run: python examples/image_filters.py [asyncio|trio]
"""

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from PIL import Image, ImageFilter, ImageOps

from flowfn import Flow, node, parallel_batch

Shared = dict[str, Any]
OUT_DIR, SIZE = Path(__file__).parent / "out" / "images", (96, 64)
FILTERS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "grayscale": ImageOps.grayscale,
    "blur": lambda picture: picture.filter(ImageFilter.GaussianBlur(4)),
    "sepia": lambda picture: ImageOps.colorize(ImageOps.grayscale(picture), "#2e1a0e", "#f5deb3"),
}


@node
def draw_inputs(shared: Shared) -> None:
    (folder := Path(shared["out_dir"]) / "inputs").mkdir(parents=True, exist_ok=True)
    sunset = ImageOps.colorize(Image.linear_gradient("L").resize(SIZE), "orange", "indigo")
    fractal = ImageOps.colorize(Image.effect_mandelbrot(SIZE, (-2, -1, 1, 1), 40), "navy", "gold")
    sunset.save(folder / "sunset.png")
    fractal.save(folder / "fractal.png")
    shared["images"] = ["sunset", "fractal"]


@node
def load(shared: Shared, image: str, filter_name: str) -> None:
    with Image.open(Path(shared["out_dir"]) / "inputs" / f"{image}.png") as picture:
        shared["work"][image, filter_name] = picture.convert("RGB")  # a key per pair
    sys.stdout.write(f"  [{image}/{filter_name}] loaded\n")  # 1 write per line


@node
def apply_filter(shared: Shared, image: str, filter_name: str) -> None:
    shared["work"][image, filter_name] = FILTERS[filter_name](shared["work"][image, filter_name])
    sys.stdout.write(f"  [{image}/{filter_name}] filtered\n")


@node
def save(shared: Shared, image: str, filter_name: str) -> None:
    path = Path(shared["out_dir"]) / f"{image}_{filter_name}.png"
    shared["work"].pop((image, filter_name)).save(path)
    shared["outputs"][image, filter_name] = str(path)
    sys.stdout.write(f"  [{image}/{filter_name}] saved {path}\n")


load >> apply_filter >> save


@parallel_batch(flow=Flow(load), limit=4)
def each_pair(shared: Shared) -> list[Shared]:
    return [{"image": image, "filter_name": f} for image in shared["images"] for f in FILTERS]


draw_inputs >> each_pair


def main(backend: str = "asyncio", out_dir: str | Path = OUT_DIR) -> dict[str, Any]:
    shared: Shared = {"out_dir": str(out_dir), "work": {}, "outputs": {}}
    print(f"--- Filtering images into {out_dir} ({backend}) ---")
    Flow(draw_inputs).run(shared, backend=backend)
    print(f"--- {len(shared['outputs'])} images written ---")
    return shared


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "asyncio")
