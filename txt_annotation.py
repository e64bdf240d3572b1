"""Write cls_train.txt (`<id>;<image path>`) and cls_names.txt (`<id>;<folder>`) from datasets/<person>/<image>.

    python txt_annotation.py
    python txt_annotation.py --datasets_path /data/faces --check_images False

Person folders get contiguous ids in sorted order. Only image files count; other files, hidden entries
and folders without images are skipped and take no id. With check_images, unreadable files are left out.
"""
#------- settings (edit here or override as --name value) -------
datasets_path = "datasets"          # one folder per person, images inside
annotation_path = "cls_train.txt"
names_path = "cls_names.txt"
absolute_paths = True               # the original writes absolute paths; False: relative to the annotation file
check_images = True                 # open and verify every image (cheap: no full decode)
#------------------------------------------------------------------
import os
import sys

from PIL import Image

from utils.checkpoint import write_text_atomic
from utils.config import configure
from utils.image import is_image_file


def scan(root: str) -> list[tuple[str, list[str]]]:
    """(folder name, sorted image paths) of every person folder under ``root`` that holds images."""
    people = []
    for name in sorted(os.listdir(root)):
        folder = os.path.join(root, name)
        if name.startswith(".") or not os.path.isdir(folder):
            continue
        images = [os.path.join(folder, f) for f in sorted(os.listdir(folder))
                  if not f.startswith(".") and is_image_file(f) and os.path.isfile(os.path.join(folder, f))]
        if images:
            people.append((name, images))
    return people


def readable(path: str) -> bool:
    """True when PIL recognises the file and its structure verifies (no pixel decode)."""
    try:
        with Image.open(path) as image:
            image.verify()
        return True
    except Exception:  # PIL raises many types for broken files; any of them means unreadable
        return False


def annotate(root: str, annotation: str, names: str, absolute: bool = True, check: bool = True) -> dict:
    """Write both files; return the summary counts and the unreadable files."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f"{root}: no such folder; put one folder per person with their images there "
                                "or set --datasets_path")
    base = os.path.dirname(os.path.abspath(annotation))
    lines, name_lines, bad, singles = [], [], [], 0
    for name, images in scan(root):
        if check:
            broken = {p for p in images if not readable(p)}
            bad += sorted(broken)
            images = [p for p in images if p not in broken]
            if not images:
                continue
        label = len(name_lines)
        name_lines.append(f"{label};{name}")
        singles += len(images) == 1
        for path in images:
            lines.append(f"{label};{os.path.abspath(path) if absolute else os.path.relpath(path, base)}")
    if not lines:
        raise FileNotFoundError(f"{root}: no images found in any person folder ({root}/<person>/<image>)")
    write_text_atomic(annotation, "\n".join(lines) + "\n")
    write_text_atomic(names, "\n".join(name_lines) + "\n")
    return {"people": len(name_lines), "images": len(lines), "single": singles, "unreadable": bad}


def main() -> None:
    try:
        summary = annotate(datasets_path, annotation_path, names_path, absolute_paths, check_images)
    except (FileNotFoundError, NotADirectoryError, PermissionError) as err:
        sys.exit(f"error: {err}")
    print(f"{annotation_path}: {summary['people']} people, {summary['images']} images; "
          f"{summary['single']} people with one image only (negatives and cross-entropy only, never anchors)")
    print(f"{names_path}: id -> folder name")
    if summary["unreadable"]:
        print(f"{len(summary['unreadable'])} unreadable files left out, e.g. {summary['unreadable'][0]}")
    elif check_images:
        print("all images readable")


if __name__ == "__main__":
    configure(globals())
    main()
