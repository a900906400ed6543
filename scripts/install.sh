#!/usr/bin/env bash
# Installs everything speechops needs on a fresh Debian 12 machine (CPU only):
# Debian packages for the real Prometheus, espeak-ng, sox and recorded speech, then the project
# with its operator, worker, triton, test and plot extras into the current Python.
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
for bin in prometheus:prometheus promtool:prometheus espeak-ng:espeak-ng sox:sox; do
    command -v "${bin%%:*}" >/dev/null 2>&1 || need_apt+=("${bin##*:}")
done
# Real human speech with reference transcripts for the ASR tests (tests/human_speech.py).
for file in /usr/share/sounds/alsa/Front_Center.wav:alsa-utils \
            /usr/share/asterisk/sounds/en_US_f_Allison/goodbye.wav:asterisk-core-sounds-en-wav \
            /usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz:asterisk-core-sounds-en; do
    [ -e "${file%%:*}" ] || need_apt+=("${file##*:}")
done
if ((${#need_apt[@]})); then
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
        $(printf '%s\n' "${need_apt[@]}" | sort -u) >/dev/null
fi

python3 -m pip install -q --disable-pip-version-check -e '.[operator,worker,triton,test,plot,client]' 2>&1 \
    | grep -v -e 'Running pip as the' -e 'pip.pypa.io/warnings/venv' || true
python3 -c 'import speechops, speechops_worker' 
