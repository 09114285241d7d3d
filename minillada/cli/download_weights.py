"""Download a released snapshot (weights, config, tokenizer) from the Hugging Face hub; check it.

    pip install -e ".[hub]"                                  # huggingface_hub, once
    python -m minillada.cli.download_weights iLLaDA-8B-Instruct
    python -m minillada.cli.download_weights LLaDA-8B-Base --dir /big/disk/LLaDA-8B-Base

The snapshot goes to ``--dir`` or ``$MINILLADA_WEIGHTS_DIR/<name>`` (default
``data/weights/<name>``, ignored by git), where lesson 7 looks for it: about 15 GB for iLLaDA-8B
and 16 GB for LLaDA-8B in bf16. Only the files the course reads are fetched (``*.json``,
``*.safetensors``); an interrupted download resumes. Afterwards the folder is checked as lesson 7
checks it (files, sizes, config, tokenizer) and the report is printed; the exit status is 1 when
something is wrong.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys

from minillada.checkpoints.released import RELEASED, inspect_snapshot, released, released_folder

PATTERNS = ["*.json", "*.safetensors"]  # config, index, shards, tokenizer files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("name", choices=sorted(RELEASED), help="which released model")
    parser.add_argument("--dir", default=None, help="target folder (default: see above)")
    parser.add_argument("--check-only", action="store_true", help="only check the folder")
    args = parser.parse_args(argv)
    model = released(args.name)
    folder = released_folder(args.name, args.dir)
    if not args.check_only:
        if importlib.util.find_spec("huggingface_hub") is None:
            print(
                'Downloading needs huggingface_hub: pip install -e ".[hub]" (or pip install '
                f"huggingface_hub), or fetch https://huggingface.co/{model.repo_id} by other "
                f"means into {folder} and run this again with --check-only.",
                file=sys.stderr,
            )
            return 2
        hub = importlib.import_module("huggingface_hub")  # optional: only this command needs it
        print(f"downloading {model.repo_id} into {folder} ...")
        hub.snapshot_download(model.repo_id, local_dir=str(folder), allow_patterns=PATTERNS)
    report = inspect_snapshot(folder, model)
    print(report)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
