#!/usr/bin/env bash
# Index the sample catalog into embedded Milvus Lite (./mmrag_data) and run a few searches.
# Without CLIP weights (as on the build machines) it says so in one line and carries on caption-side.
set -euo pipefail
cd "$(dirname "$0")/.."
MMRAG=".venv/bin/mmrag"
DATA="${MMRAG_SHARED_DATA:-../shared/data}/retrieval"
if [[ ! -f "$DATA/metadata.jsonl" ]]; then
  echo "sample catalog not found at $DATA (set MMRAG_SHARED_DATA); index your own folder with: $MMRAG index PATH" >&2
  exit 2
fi
set -x
"$MMRAG" index "$DATA/images" --metadata "$DATA/metadata.jsonl" --clip-optional ${MMRAG_CLIP_MODEL:+--clip-model "$MMRAG_CLIP_MODEL"}
"$MMRAG" search "giraffe" --mode caption -k 5
"$MMRAG" search "a cat next to a laptop" --mode hybrid -k 5
"$MMRAG" search "a red double-decker bus" --mode bm25 -k 3 --filter coco_split=val2017
"$MMRAG" search --image "$DATA/images/coco_000000000139.jpg" -k 3
