#!/usr/bin/env bash
# lmhost's GPU run (README "On a GPU") on a GPU host without network, as it ran on a lent H200:
# cwd = the repository root, $OUT = where the logs go, as root. A copy of this file is run as
# .gpu/run.sh, beside what it needs, gathered beforehand where pip and npm work (ignored: never
# committed):
#   whl/                 wheels of what the host's Python lacks (3.12, manylinux x86_64: `pip
#                        download --no-deps --only-binary=:all: --python-version 3.12 ...`)
#   lcp.tar.xz           llama-cpp-python 0.3.36's Python package (llama_cpp/) and its vendored
#                        llama.cpp, stripped (no docs, models, tests, examples, web UI, other backends)
#   node.xz, node_modules.tar.xz   node 20 (static) and @lmstudio/sdk 2.0.0 (tests/e2e/node's lock)
# Stages, each bounded by `timeout` inside one budget (BUDGET s from the start), stamped with date:
#   setup     wheels -> /tmp/site, sources and node -> /tmp/lmh-gpu         (~15 s)
#   build     llama.cpp with CUDA for sm_90: libllama, libmtmd, llama-server (~250-300 s, 16 cores)
#   estimate  bench/estimate_accuracy.py --gpu --no-smollm2                  (~90 s)
#   check     bench/gpu_check.py --rounds 3 --llama-server --node             (~45 s)
# STAGES="estimate check" bash .gpu/run.sh reruns part of it on the same warm machine: what /tmp
# still holds (the install, the build) is not redone.
set -u -o pipefail
START=$(date +%s)
BUDGET=${BUDGET:-560}
STAGES=${STAGES:-setup build estimate check}
CUDA_FA=${CUDA_FA:-ON}   # OFF: no FlashAttention kernels, a shorter build (FA rows then run on the CPU)
TARGETS=${TARGETS:-llama-server llama mtmd}
EST_ARGS=${EST_ARGS:-}
NATIVE=${NATIVE:-ON}   # as the earlier GPU run built (cmake's default); built and run on this host
REPO=$PWD
G=$REPO/.gpu
W=${LMH_GPU_DIR:-/tmp/lmh-gpu}
SITE=${LMH_SITE:-/tmp/site}
B=$W/build
OUT=${OUT:-$W/out}
mkdir -p "$W" "$SITE" "$OUT"
export PYTHONUNBUFFERED=1 GGML_NO_BACKTRACE=1
export PYTHONPATH=$SITE:$REPO
export PATH=/usr/local/cuda/bin:$PATH
PY=python3

stamp() { echo "=== $(date -u '+%F %T') (+$(( $(date +%s) - START )) s) $*"; }
# seconds for a stage: at most CAP, and RESERVE left for the stages after it
bound() {
  local cap=$1 reserve=${2:-0} l
  l=$(( BUDGET - ($(date +%s) - START) - reserve - 5 ))
  (( l < cap )) && cap=$l
  (( cap < 10 )) && cap=10
  echo "$cap"
}
want() { [[ " $STAGES " == *" $1 "* ]]; }
untar() { $PY -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2], filter="data")' "$1" "$2"; }

if want setup; then
  stamp setup
  nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version,compute_cap --format=csv
  echo "$($PY --version), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)," \
       "flags: $(grep -m1 -o -w -E 'avx2|avx512f|avx512_vnni|amx_tile|amx_int8' /proc/cpuinfo | sort -u | tr '\n' ' ')"
  nvcc --version | tail -1; cmake --version | head -1; ninja --version
  echo "repo at $(git -C "$REPO" log -1 --format='%h %cI' 2>/dev/null || echo '(no git here)')" \
       "$(git -C "$REPO" status --short 2>/dev/null | tr '\n' ' ');" \
       "bench scripts md5 $(cat bench/estimate_accuracy.py bench/gpu_check.py | md5sum | cut -c1-12)"
  if [ ! -f "$SITE/.lmh-installed" ]; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$SITE" "$G"/whl/*.whl || { echo "setup: pip install failed"; exit 3; }
    untar "$G/lcp.tar.xz" "$W" || { echo "setup: unpacking llama.cpp failed"; exit 3; }
    cp -r "$W/llama_cpp" "$SITE/" && mkdir -p "$SITE/llama_cpp/lib"
    if [ -f "$G/node.xz" ]; then
      $PY -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' \
          "$G/node.xz" "$W/node" && chmod +x "$W/node" && mkdir -p "$W/e2e" \
        && untar "$G/node_modules.tar.xz" "$W/e2e" && echo "node $("$W/node" --version)"
    fi
    touch "$SITE/.lmh-installed"
  fi
  $PY -m pip list --path "$SITE" 2>/dev/null | tail -n +3 | tr -s ' ' | tr '\n' ';'; echo
fi

if want build; then
  stamp build
  if ls "$B"/bin/libllama.so* "$B"/bin/libmtmd.so* >/dev/null 2>&1; then
    echo "already built in $B"
  else
    gen=(-G Ninja); command -v ninja >/dev/null || gen=()
    flags=(-DGGML_NATIVE="$NATIVE")
    [ "$NATIVE" = OFF ] && flags+=(-DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON)
    timeout -k 10 "$(bound 60 150)" cmake -S "$W/llama.cpp" -B "$B" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release \
        -DBUILD_SHARED_LIBS=ON -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DGGML_CUDA_FA="$CUDA_FA" "${flags[@]}" \
        -DGGML_CCACHE=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF \
        -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=ON -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_APP=OFF \
        -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF > "$OUT/build.log" 2>&1 \
      || { tail -30 "$OUT/build.log"; echo "build: cmake configure failed"; exit 4; }
    grep -E "CUDA Toolkit|CUDA_ARCHITECTURES|Including|GGML_NATIVE|x86 detected|Adding CPU" "$OUT/build.log"
    stamp "configured; building $TARGETS"
    timeout -k 10 "$(bound 400 ${BUILD_RESERVE:-150})" cmake --build "$B" --target $TARGETS -j 16 \
        >> "$OUT/build.log" 2>&1 || { tail -40 "$OUT/build.log"; echo "build: failed or out of time"; exit 4; }
    tail -3 "$OUT/build.log"
  fi
  cp -a "$B"/bin/lib*.so* "$SITE/llama_cpp/lib/"
  ls "$SITE/llama_cpp/lib"
  $PY -c 'import sys, llama_cpp as l; ok = l.llama_supports_gpu_offload(); print("llama_cpp", l.__version__, "from", l.__file__, "GPU offload:", ok); sys.exit(0 if ok else 1)' \
    || { echo "build: llama-cpp-python does not see the GPU"; exit 5; }
fi

if want estimate; then
  stamp "estimate: bench/estimate_accuracy.py --gpu --no-smollm2 $EST_ARGS (CUDA_FA=$CUDA_FA, targets $TARGETS)"
  timeout -s INT -k 20 "$(bound 260 70)" $PY bench/estimate_accuracy.py --gpu --no-smollm2 $EST_ARGS 2>&1 \
    | tee "$OUT/estimate_gpu.log"
  echo "estimate_accuracy exit ${PIPESTATUS[0]}"
fi

if want check; then
  stamp "check: bench/gpu_check.py"
  node=(); [ -x "$W/node" ] && node=(--node "$W/node" --node-modules "$W/e2e/node_modules")
  timeout -s INT -k 20 "$(bound 200)" $PY bench/gpu_check.py --rounds 3 --llama-server "$B/bin/llama-server" \
      "${node[@]}" --json "$OUT/gpu_check.json" 2>&1 | tee "$OUT/gpu_check.log"
  echo "gpu_check exit ${PIPESTATUS[0]}"
fi

stamp "done; GPU processes left:"
nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader
ls -la "$OUT"
