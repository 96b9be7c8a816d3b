#!/usr/bin/env bash
# The main job, end to end, on the checked-in default local repository (model_repos.yaml: "local").
# Makes a small model, pushes two near-identical versions, lists them, pulls one, proves it is
# byte-identical, shows what the second version cost, and audits the result. Run from anywhere: `uv run scripts/demo.sh`.
# It leaves behind demo-work/ (the model directories and the pulled copy) and the model demo-model in
# the repository under .aim/repo (both ignored by git); its last lines say how to remove them.
set -euo pipefail
cd "$(dirname "$0")/.."
aim() { aim_cli --config model_repos.yaml "$@"; }
work=demo-work
rm -rf "$work" && mkdir -p "$work"
tag1="v1-$(date +%Y%m%d%H%M%S)"
tag2="${tag1/v1/v2}"

echo "== making a 24 MiB model in $work/model_v1 (3 shards, a config)"
python3 - "$work" <<'PY'
import os, random, sys
work = sys.argv[1]
rng = random.Random(7)
for v in (1, 2):
    d = os.path.join(work, f"model_v{v}")
    os.makedirs(d)
    with open(os.path.join(d, "config.json"), "w") as f:
        f.write('{"architecture": "demo", "layers": 12, "version": %d}\n' % v)
for i in range(3):
    shard = bytearray(random.Random(i).randbytes(8 << 20))
    with open(os.path.join(work, "model_v1", f"model-{i}.bin"), "wb") as f:
        f.write(shard)
    if i == 1:  # version 2 fine-tunes one layer: 1 MiB of one shard changes
        shard[3 << 20 : 4 << 20] = rng.randbytes(1 << 20)
    with open(os.path.join(work, "model_v2", f"model-{i}.bin"), "wb") as f:
        f.write(shard)
PY

echo "== push v1 and v2 (the second stores only its changed chunks)"
aim model push local demo-model "$work/model_v1" --tag "$tag1" --message "first" --quiet
aim model push local demo-model "$work/model_v2" --tag "$tag2" --message "one layer changed" --quiet

echo "== list"
aim model list local
aim model versions local demo-model

echo "== pull $tag1 and compare byte for byte"
aim model pull local demo-model "$work/pulled" --tag "$tag1" --quiet
diff -r --exclude=.aim "$work/model_v1" "$work/pulled" && echo "identical: $work/pulled == $work/model_v1"

echo "== pull the newest version into the same directory (only changed chunks are fetched)"
aim model pull local demo-model "$work/pulled" --quiet
diff -r --exclude=.aim "$work/model_v2" "$work/pulled" && echo "identical: $work/pulled == $work/model_v2"

echo "== audit: the pulled directory against the manifest's whole-file digests, then the stored blobs"
aim model verify local demo-model --tag "$tag2" --local "$work/pulled"
aim model verify local demo-model --tag "$tag2"

echo "== left behind: $work/ (the model directories and the pulled copy) and the versions of demo-model"
echo "   in the local repository (.aim/repo), both ignored by git. To remove them, in $(pwd):"
echo "   rm -rf $work && uv run aim_cli model delete local demo-model --yes && uv run aim_cli repo gc local"
echo "   (rm -rf .aim/repo instead drops the whole local repository, with what else was pushed to it)"
