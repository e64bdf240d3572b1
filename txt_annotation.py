"""Write cls_train.txt (`<id>;<image path>`) and cls_names.txt (`<id>;<folder>`) from datasets/<person>/<image>.

    python txt_annotation.py
    python txt_annotation.py --datasets_path /data/faces --check_images False
    python txt_annotation.py --datasets_path /data/faces --rec_path /data/faces.rec   # also one RecordIO file

Person folders get contiguous ids in sorted order. Only image files count; other files, hidden entries
and folders without images are skipped and take no id. With check_images every image is decoded fully
and unreadable or truncated files are left out. Images in folders below a person folder and names
that cannot be written as one line are left out too, and reported.
"""
#------- settings (edit here or override as --name value) -------
datasets_path = "datasets"          # one folder per person, images inside
annotation_path = "cls_train.txt"
names_path = "cls_names.txt"
absolute_paths = True               # the original writes absolute paths; False: relative to the annotation file
check_images = True                 # decode every image fully and leave out those that fail (truncated ...)
rec_path = ""                       # also pack the annotated images into this RecordIO face pack (+ .idx beside
                                    # it), insightface's layout: train.py --annotation_path <rec_path> trains on it
#------------------------------------------------------------------
import os

from utils.checkpoint import write_text_atomic
from utils.config import Bool, Opt, OutputFile, Text, UserError, configure, run_main
from utils.dataloader import read_annotation
from utils.image import ImageError, is_image_file, open_rgb
from utils.recordio import index_path, pack_annotation

# What each setting above accepts, checked by utils.config before any work and listed by --help.
RULES = {
    "datasets_path": Text(), "annotation_path": OutputFile(), "names_path": OutputFile(), "absolute_paths": Bool(),
    "check_images": Bool(), "rec_path": Opt(OutputFile(".rec"), unset=""),
}


class DatasetError(UserError):
    """A datasets folder that gives no annotation; the message is one line naming it."""


def writable_name(text: str) -> bool:
    """True when ``text`` can stand in one line of a UTF-8 annotation file: no line breaks of any kind
    (str.splitlines breaks at \\r, \\x0b, \\x85, \\u2028 ...) and no undecodable bytes."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return len(f"a{text}b".splitlines()) == 1


def scan(root: str) -> tuple[list[tuple[str, list[str]]], list[str], list[str]]:
    """(person folder name, sorted image paths) of every folder under ``root`` that holds images, then
    the image files in folders below a person folder (not used), then the paths with unwritable names."""
    people, nested, unsafe = [], [], []
    for name in sorted(os.listdir(root)):
        folder = os.path.join(root, name)
        if name.startswith(".") or not os.path.isdir(folder):
            continue
        images = []
        for entry in sorted(os.listdir(folder)):
            path = os.path.join(folder, entry)
            if entry.startswith("."):
                continue
            if os.path.isdir(path):
                nested += sorted(os.path.join(below, f) for below, _, files in os.walk(path)
                                 for f in files if is_image_file(f) and not f.startswith("."))
            elif is_image_file(entry) and os.path.isfile(path):
                (images if writable_name(path) else unsafe).append(path)
        if images and not writable_name(name):
            unsafe += images
        elif images:
            people.append((name, images))
    return people, nested, unsafe


def readable(path: str) -> bool:
    """True when the image decodes completely, exactly as training will read it."""
    try:
        open_rgb(path)
        return True
    except ImageError:
        return False


def annotate(root: str, annotation: str, names: str, absolute: bool = True, check: bool = True) -> dict:
    """Write both files; return the summary counts, the unreadable files, the images in nested
    folders and those whose names cannot be written."""
    if not os.path.isdir(root):
        raise DatasetError(f"{root}: no such folder; put one folder per person with their images there "
                           "or set --datasets_path")
    base = os.path.dirname(os.path.abspath(annotation))
    people, nested, unsafe = scan(root)
    lines, name_lines, bad, singles = [], [], [], 0
    for name, images in people:
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
        raise DatasetError(f"{root}: no usable images in any person folder ({root}/<person>/<image>)")
    write_text_atomic(annotation, "\n".join(lines) + "\n")
    write_text_atomic(names, "\n".join(name_lines) + "\n")
    return {"people": len(name_lines), "images": len(lines), "single": singles, "unreadable": bad,
            "nested": nested, "unsafe": unsafe}


def main() -> None:
    if os.path.abspath(annotation_path) == os.path.abspath(names_path):
        raise UserError(f"--annotation_path and --names_path are the same file {annotation_path}")
    summary = annotate(datasets_path, annotation_path, names_path, absolute_paths, check_images)
    print(f"{annotation_path}: {summary['people']} people, {summary['images']} images; "
          f"{summary['single']} people with one image only (negatives and cross-entropy only, never anchors)")
    print(f"{names_path}: id -> folder name")
    if summary["unreadable"]:
        print(f"{len(summary['unreadable'])} unreadable files left out, e.g. {summary['unreadable'][0]}")
    elif check_images:
        print("all images readable")
    if summary["nested"]:
        print(f"warning: {len(summary['nested'])} images in folders below a person folder left out (only "
              f"{datasets_path}/<person>/<image> counts), e.g. {summary['nested'][0]}")
    if summary["unsafe"]:
        print(f"warning: {len(summary['unsafe'])} images left out whose folder or file name holds a line break "
              f"or undecodable bytes (it cannot be one line of {annotation_path}), e.g. "
              f"{ascii(summary['unsafe'][0])}; rename them")
    if rec_path:
        packed = pack_annotation(read_annotation(annotation_path), rec_path)
        print(f"{rec_path} and {index_path(rec_path)}: {packed['images']} images of {packed['classes']} people, "
              f"{packed['bytes'] / 2**20:.1f} MiB (the image files as they are)")


if __name__ == "__main__":
    run_main(lambda: (configure(globals()), main()))
