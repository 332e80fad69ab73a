#!/usr/bin/env bash
# GPU smoke test for a machine with NVIDIA GPUs (not run in CI: the reference machine has
# none). One launcher, one worker per GPU, each seeing one device; checks that every GPU
# ran trials, that the study stopped at exactly N trials and that every trial recorded
# its worker's device (protolab.cuda_visible_devices).
#
#   bash benchmarks/gpu_smoke.sh [N_TRIALS]        # from the repository root, after
#                                                  # pip install -e ".[dev]" with CUDA builds
set -euo pipefail
N_TRIALS=${1:-16}
REPO=$(cd "$(dirname "$0")/.." && pwd)
PY="$REPO/.venv/bin/python"
command -v nvidia-smi >/dev/null || { echo "no nvidia-smi: not a GPU machine"; exit 1; }
nvidia-smi -L
WORK=$(mktemp -d /tmp/protolab-gpu-smoke.XXXX)
cp -r "$REPO/configs" "$REPO/experiments" "$WORK/"
cd "$WORK"
t0=$(date +%s)
"$REPO/.venv/bin/protolab" sweep configs/digits_mlp.yaml --workers auto \
  hardware.accelerator=gpu study.name=gpu-smoke study.n_trials="$N_TRIALS" train.epochs=3
echo "wall $(( $(date +%s) - t0 )) s"
"$PY" - "$N_TRIALS" <<'EOF'
import collections, subprocess, sys
import optuna
from protolab._stores import open_storage

n = int(sys.argv[1])
gpus = [l for l in subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True).stdout.splitlines() if l.startswith("GPU ")]
trials = optuna.load_study(study_name="gpu-smoke", storage=open_storage(None)).trials
done = [t for t in trials if t.state.is_finished() and t.state.name in ("COMPLETE", "PRUNED")]
per_device = collections.Counter(t.user_attrs.get("protolab.cuda_visible_devices") for t in trials)
print(f"{len(done)} finished trials; per device: {dict(per_device)}")
assert len(done) == n, f"expected exactly {n} finished trials"
assert None not in per_device, "a trial without its worker's device"
assert len(per_device) == len(gpus), f"{len(gpus)} GPUs but trials on {len(per_device)}"
print("gpu smoke: ok")
EOF
