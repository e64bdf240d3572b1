"""An annotation without the LFW people of chosen sets, for choosing settings on people never trained on.

The shipped weights are scored on LFW sets 8-10, so settings must be chosen on other people: pilots train
on cls_train.txt minus the people of sets 6-7 and are scored on the official pairs of sets 6-7. The lines
keep their image paths, so the teacher file of the whole annotation serves them too; class ids are
renumbered to stay contiguous. Run from the repository root: python -m recipes.hold_out_sets
"""
#------- settings (edit here or override as --name value) -------
annotation_path = "cls_train.txt"
lfw_people_path = "model_data/lfw_people.txt"  # LFW's official people.txt (View 2, 10 sets)
held_out_sets = [6, 7]                         # sets whose people are left out
output_path = "cls_pilot.txt"                  # in the annotation's folder, so the teacher's keys still match
#------------------------------------------------------------------
import os

from recipes.make_trainset import read_people_sets
from utils.checkpoint import write_bytes_atomic
from utils.config import Int, List, OutputFile, Text, UserError, configure, print_settings, run_main, settings_of

# What each setting above accepts, checked by utils.config before any work and listed by --help.
RULES = {"annotation_path": Text(), "lfw_people_path": Text(), "held_out_sets": List(Int(1, 10)),
         "output_path": OutputFile()}


def hold_out(lines: list[str], people: set[str]) -> list[str]:
    """The annotation lines (``id;path``) of people outside ``people`` (a person is the image's folder),
    with ids renumbered 0, 1, ... in order of first appearance."""
    ids: dict[str, int] = {}
    kept = []
    for line in lines:
        cid, path = line.split(";", 1)
        if os.path.basename(os.path.dirname(path)) not in people:
            kept.append(f"{ids.setdefault(cid, len(ids))};{path}")
    return kept


def main() -> None:
    configure(globals())
    print_settings(settings_of(globals()))
    for path, fix in ((annotation_path, "run txt_annotation.py first"),
                      (lfw_people_path, "give LFW's people.txt as --lfw_people_path")):
        if not os.path.isfile(path):
            raise UserError(f"{path}: no such file; {fix}")
    sets = read_people_sets(lfw_people_path)
    people = {name for s in held_out_sets for name in sets[s - 1]}
    if os.path.dirname(os.path.abspath(output_path)) != os.path.dirname(os.path.abspath(annotation_path)):
        raise UserError(f"{output_path}: write it beside {annotation_path}, where the teacher's keys are relative to")
    with open(annotation_path, encoding="utf-8") as handle:
        lines = [line.strip() for line in handle if line.strip()]
    kept = hold_out(lines, people)
    write_bytes_atomic(output_path, ("\n".join(kept) + "\n").encode())
    classes = len({line.split(";", 1)[0] for line in kept})
    print(f"{output_path}: {len(kept)} of {len(lines)} images, {classes} people "
          f"(the {len(people)} people of sets {','.join(map(str, held_out_sets))} left out)")


if __name__ == "__main__":
    run_main(main)
