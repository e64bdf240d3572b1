"""Write an aligned LFW folder and its pairs.txt as a .bin validation set (insightface's kind of file).

    python -m recipes.lfw_bin --lfw_dir_path lfw --lfw_pairs_path model_data/lfw_pair.txt --bin_path lfw.bin
    python eval_LFW.py --bin_path lfw.bin      # the same numbers as --lfw_dir_path lfw

The images go in as their files' bytes, in pairs.txt order, so the 10 folds of consecutive pairs a .bin
is scored with are LFW's 10 official sets: the .bin scores exactly as the folder does.
"""
#------- settings (edit here or override as --name value) -------
lfw_dir_path = "lfw"                        # aligned LFW: <name>/<name>_0001.jpg ...
lfw_pairs_path = "model_data/lfw_pair.txt"  # official pairs.txt
bin_path = "lfw.bin"
#------------------------------------------------------------------
from utils.binset import write_pairs_bin
from utils.config import OutputFile, Text, configure, run_main
from utils.lfw import load_pairs

# What each setting above accepts, checked by utils.config before any work and listed by --help.
RULES = {"lfw_dir_path": Text(), "lfw_pairs_path": Text(), "bin_path": OutputFile(".bin")}


def main() -> None:
    count = write_pairs_bin(bin_path, load_pairs(lfw_pairs_path, lfw_dir_path))
    print(f"{bin_path}: {count} pairs of {lfw_dir_path} in {lfw_pairs_path} order")


if __name__ == "__main__":
    run_main(lambda: (configure(globals()), main()))
