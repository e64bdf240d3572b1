"""Write a very large photo with one face in it, to measure alignment cost on any photo size.

    python benchmarks/large_photo.py --path /tmp/large.jpg --side 12000
    /usr/bin/time -v python predict.py /tmp/large.jpg img/1_001.jpg    # wall time and peak memory

The face is the sample img/1_001.jpg enlarged to a third of the side, on a grey background.
"""
#------- settings (edit here or override as --name value) -------
path = "large.jpg"     # where the photo is written (JPEG)
side = 12000           # width and height in pixels
#------------------------------------------------------------------
import os
import sys

from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from utils.config import check_int, check_output_file, configure, run_main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main() -> None:
    check_int("side", side, 100, 20000)
    check_output_file("path", path, (".jpg", ".jpeg"))
    Image.MAX_IMAGE_PIXELS = None
    face = Image.open(os.path.join(ROOT, "img", "1_001.jpg")).convert("RGB").resize((side // 3, side // 3),
                                                                                     Image.BICUBIC)
    photo = Image.new("RGB", (side, side), (110, 120, 115))
    photo.paste(face, (side // 2 - side // 6, side // 3))
    photo.save(path, quality=90)
    print(f"{path}: {side}x{side}, {os.path.getsize(path) / 1e6:.1f} MB")


if __name__ == "__main__":
    run_main(lambda: (configure(globals()), main()))
