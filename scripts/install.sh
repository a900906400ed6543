#!/usr/bin/env bash
# Installs everything speechops needs on a fresh Debian 12 machine (CPU only):
# Debian packages for the real Prometheus, espeak-ng and sox, then the project
# with its worker, triton, test and plot extras into the current Python.
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
for bin in prometheus:prometheus promtool:prometheus espeak-ng:espeak-ng sox:sox; do
    command -v "${bin%%:*}" >/dev/null 2>&1 || need_apt+=("${bin##*:}")
done
# Real human speech with known words for the tests: alsa-utils' recorded channel names.
[ -f /usr/share/sounds/alsa/Front_Center.wav ] || need_apt+=(alsa-utils)
if ((${#need_apt[@]})); then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
        $(printf '%s\n' "${need_apt[@]}" | sort -u) >/dev/null
fi

python3 -m pip install -q --disable-pip-version-check -e '.[worker,triton,test,plot,client]' 2>&1 \
    | grep -v -e 'Running pip as the' -e 'pip.pypa.io/warnings/venv' || true
python3 -c 'import speechops, speechops_worker' 
