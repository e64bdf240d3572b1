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

from utils.annotation import annotate
from utils.config import Bool, Opt, OutputFile, Text, UserError, configure, run_main
from utils.dataloader import read_annotation
from utils.recordio import index_path, pack_annotation

# What each setting above accepts, checked by utils.config before any work and listed by --help.
RULES = {
    "datasets_path": Text(), "annotation_path": OutputFile(), "names_path": OutputFile(), "absolute_paths": Bool(),
    "check_images": Bool(), "rec_path": Opt(OutputFile(".rec"), unset=""),
}


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
