#!/bin/sh
# A FAKE `outpost-worker inspect`, for builds without libtorch (the real worker is in runtime/;
# the tests use it whenever it is built). It prints the document the real one prints, with fixed
# method signatures, and refuses a model.pt that starts with "corrupt" as the real one refuses a
# file that is not TorchScript.
set -eu
if [ "$#" -ne 2 ] || [ "$1" != inspect ]; then
  echo "usage: fake_worker.sh inspect PACKAGE_DIR" >&2
  exit 2
fi
dir=$2
if [ ! -f "$dir/model.pt" ]; then
  echo "outpost-worker inspect: invalid_argument: the package has no model.pt" >&2
  exit 1
fi
if head -c 7 "$dir/model.pt" | grep -q '^corrupt'; then
  echo "outpost-worker inspect: invalid_argument: model.pt is not a TorchScript archive (PytorchStreamReader failed reading zip archive)" >&2
  exit 1
fi
id=$(sed -n 's/^  id: *"\{0,1\}\([A-Za-z0-9_-]*\)"\{0,1\} *$/\1/p' "$dir/config.yaml" | head -n 1)
sha=$(sha256sum "$dir/model.pt" | cut -d' ' -f1)
size=$(wc -c < "$dir/model.pt" | tr -d ' ')
cat <<JSON
{"model_id": "$id", "file": "model.pt", "file_sha256": "$sha", "file_size": $size,
 "config": {"model": {"id": "$id"}},
 "methods": [
   {"name": "predict", "kind": "unary", "inputs": [{"name": "text", "type": "str"}, {"name": "upper", "type": "bool", "default": true}], "returns": "str"},
   {"name": "generate", "kind": "generate", "inputs": [{"name": "prompt", "type": "str"}, {"name": "max_tokens", "type": "int", "default": 64}], "returns": "str"},
   {"name": "words", "kind": "stream", "inputs": [{"name": "text", "type": "str"}], "returns": "str"}
 ]}
JSON
