"""Annotation files from a datasets folder: ``<id>;<image path>`` per image and ``<id>;<folder>`` per person.

Person folders get contiguous ids in sorted order; only image files count, and images that cannot be
read or whose names cannot stand on one line are left out and reported (txt_annotation.py's job).
"""
from __future__ import annotations

import os

from utils.checkpoint import write_text_atomic
from utils.config import UserError
from utils.image import ImageError, is_image_file, open_rgb



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
        raise UserError(f"{root}: no such folder; put one folder per person with their images there "
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
        raise UserError(f"{root}: no usable images in any person folder ({root}/<person>/<image>)")
    write_text_atomic(annotation, "\n".join(lines) + "\n")
    write_text_atomic(names, "\n".join(name_lines) + "\n")
    return {"people": len(name_lines), "images": len(lines), "single": singles, "unreadable": bad,
            "nested": nested, "unsafe": unsafe}
