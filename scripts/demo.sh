#!/usr/bin/env bash
# Index a sample catalog into embedded Milvus Lite ($MMRAG_DATA_DIR, default ./mmrag_data) and run a few searches.
# Catalog: the full sample set at ${MMRAG_SHARED_DATA:-../shared/data}/retrieval when it is there, else the
# 40-photo examples/catalog committed in the repo. The searches have answers in both.
# Without CLIP weights (as on the build machines) it says so in one line and carries on caption-side.
# MMRAG_CMD replaces the CLI command (default .venv/bin/mmrag), e.g. "python -m mmrag.cli" from a plain checkout;
# MMRAG_DEMO_JSON=1 makes every step print JSON (tests read it).
set -euo pipefail
cd "$(dirname "$0")/.."
read -r -a MMRAG <<< "${MMRAG_CMD:-.venv/bin/mmrag}"
JSON=(${MMRAG_DEMO_JSON:+--json})
DATA="${MMRAG_SHARED_DATA:-../shared/data}/retrieval"
if [[ -f "$DATA/metadata.jsonl" ]]; then
  echo "demo catalog: full sample set at $DATA"
else
  DATA="examples/catalog"
  echo "demo catalog: examples/catalog (40 photos in the repo; full sample set not found at ${MMRAG_SHARED_DATA:-../shared/data}/retrieval)"
fi
set -x
"${MMRAG[@]}" index "$DATA/images" --metadata "$DATA/metadata.jsonl" --clip-optional "${JSON[@]}" ${MMRAG_CLIP_MODEL:+--clip-model "$MMRAG_CLIP_MODEL"}
"${MMRAG[@]}" search "an elephant" --mode caption -k 5 "${JSON[@]}"
"${MMRAG[@]}" search "a cat next to a laptop" --mode hybrid -k 5 "${JSON[@]}"
"${MMRAG[@]}" search "a red stop sign" --mode bm25 -k 3 --filter coco_split=val2017 "${JSON[@]}"
"${MMRAG[@]}" search --image "$DATA/images/coco_000000119828.jpg" -k 3 "${JSON[@]}"
