"""Gets Fashion-MNIST ready: downloads the files missing from the data
directory (checked against their published MD5s), or checks the files a user
put there.

    guild run prepare                        # into ~/.cache/fashion-mnist
    guild run prepare data-dir=/data/fmnist  # use (or fill) that directory
"""

import argparse
import sys

import fashion_data as data


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", default="")
    parser.add_argument(
        "--mirror", default="", help="a base URL to download from instead"
    )
    args = parser.parse_args()
    directory = data.data_dir(args.data_dir)
    mirrors = (args.mirror,) if args.mirror else data.MIRRORS
    try:
        for name in data.missing_files(directory):
            print(f"Downloading {name}", flush=True)
            data.download(name, directory, mirrors)
        _report_checksums(directory)
        counts = {split: data.check_split(directory, split) for split in data.SPLITS}
    except data.DataError as e:
        print(f"prepare: {e}", file=sys.stderr)
        return 1
    print(
        f"Fashion-MNIST in {directory}: {counts['train']} training and "
        f"{counts['test']} test images"
    )
    return 0


def _report_checksums(directory: str) -> None:
    """Files a user put in place are used as they are; say when they are not
    the published ones."""
    for name, expected in data.FILES.items():
        if data.md5(f"{directory}/{name}") != expected:
            print(f"Note: {name} is not the published file (MD5 differs)")


if __name__ == "__main__":
    sys.exit(main())
