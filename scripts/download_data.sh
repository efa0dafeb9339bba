#!/usr/bin/env bash
# Fetch the course's datasets into data/ (idempotent: files already present are skipped).
#   bash scripts/download_data.sh            # TinyStories + OpenWebText sample
#   bash scripts/download_data.sh tinystories
set -euo pipefail
cd "$(dirname "$0")/../data"
what="${1:-all}"
base_ts="https://huggingface.co/datasets/roneneldan/TinyStories/resolve/main"
base_owt="https://huggingface.co/datasets/stanford-cs336/owt-sample/resolve/main"

fetch() {  # fetch URL FILE: download to FILE.part, then rename (never leaves a half file as FILE)
    local url="$1" out="$2"
    if [ -s "$out" ]; then echo "have $out"; return 0; fi
    echo "downloading $out"
    if command -v curl >/dev/null 2>&1; then
        curl -fL --retry 3 -o "$out.part" "$url" || { rm -f "$out.part"; echo "error: could not download $url (no internet? blocked?)" >&2; return 1; }
    elif command -v wget >/dev/null 2>&1; then
        wget -q -O "$out.part" "$url" || { rm -f "$out.part"; echo "error: could not download $url (no internet? blocked?)" >&2; return 1; }
    else
        echo "error: need curl or wget to download $url" >&2; return 1
    fi
    mv "$out.part" "$out"
}

gunzip_fetch() {  # for .gz sources: fetch then decompress to FILE
    local url="$1" out="$2"
    if [ -s "$out" ]; then echo "have $out"; return 0; fi
    fetch "$url" "$out.gz"
    gunzip -c "$out.gz" > "$out.part" && mv "$out.part" "$out" && rm -f "$out.gz"
}

case "$what" in
    all|tinystories)
        fetch "$base_ts/TinyStoriesV2-GPT4-train.txt" TinyStoriesV2-GPT4-train.txt
        fetch "$base_ts/TinyStoriesV2-GPT4-valid.txt" TinyStoriesV2-GPT4-valid.txt ;;&
    all|owt)
        gunzip_fetch "$base_owt/owt_train.txt.gz" owt_train.txt
        gunzip_fetch "$base_owt/owt_valid.txt.gz" owt_valid.txt ;;
    tinystories) ;;
    *) echo "error: unknown dataset '$what' (use: all, tinystories, owt)" >&2; exit 2 ;;
esac
echo "done: $(ls -1 | grep -v README.md | tr '\n' ' ')"
