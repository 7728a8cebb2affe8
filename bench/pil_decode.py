"""PIL reference for `rush bench decode`: per image, open the PNG, convert to RGBA, resize to SIZE x SIZE (bilinear),
composite on white, take RGB as a uint8 array -- one process, one core. Prints one JSON line: images, seconds, pil.

Usage: python bench/pil_decode.py --size 128 FILE.png ...
"""
import argparse
import json
import time

import numpy as np
from PIL import Image, __version__ as pil_version


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--size", type=int, default=128)
    p.add_argument("files", nargs="+")
    a = p.parse_args()
    for f in a.files:  # page cache, as rush does
        with open(f, "rb") as fh:
            fh.read()
    white = Image.new("RGBA", (a.size, a.size), (255, 255, 255, 255))
    checksum = 0
    start = time.perf_counter()
    for f in a.files:
        with Image.open(f) as im:
            rgba = im.convert("RGBA").resize((a.size, a.size), Image.BILINEAR)
        rgb = np.asarray(Image.alpha_composite(white, rgba).convert("RGB"))
        checksum += int(rgb[a.size // 2, a.size // 2, 0])
    seconds = time.perf_counter() - start
    print(json.dumps({"images": len(a.files), "seconds": seconds, "pil": pil_version, "checksum": checksum}))


if __name__ == "__main__":
    main()
