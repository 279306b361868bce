#!/usr/bin/env bash
# Refreshes the vendored SP-API models from a checkout of Amazon's models repository, then regenerates
# the operation snapshot the tests compare them with.
#
#   git clone https://github.com/amzn/selling-partner-api-models /tmp/models
#   spapi-models/refresh.sh /tmp/models
#
# Afterwards: `cargo test --all-features --test catalog_models` tells which catalogue entries the new
# models disagree with; `git diff tests/data/model_operations.tsv` shows what changed operation by
# operation.
set -euo pipefail

src=${1:?usage: spapi-models/refresh.sh PATH-TO-selling-partner-api-models-CHECKOUT}
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
[ -d "$src/models" ] || { echo "$src has no models/ folder: is it a checkout of amzn/selling-partner-api-models?" >&2; exit 1; }

commit=$(git -C "$src" rev-parse HEAD)
day=$(git -C "$src" log -1 --format=%cs)

# Flatten models/**/*.json into this folder; two models with one file name would overwrite each other.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
while IFS= read -r -d '' model; do
  name=$(basename "$model")
  if [ -e "$tmp/$name" ]; then
    echo "two models are named $name; flattening would lose one" >&2
    exit 1
  fi
  cp "$model" "$tmp/$name"
done < <(find "$src/models" -name '*.json' -type f -print0)

rm -f "$here"/*.json
cp "$tmp"/*.json "$here"/
cp "$src/LICENSE" "$src/NOTICE" "$here"/
printf 'amzn/selling-partner-api-models %s %s\n' "$commit" "$day" > "$here/SOURCE"
echo "copied $(ls "$here"/*.json | wc -l) models at $commit ($day)"

cd "$root"
UPDATE_MODEL_SNAPSHOT=1 cargo test --all-features --test catalog snapshot_matches_the_models
cargo xtask usage-plans
echo "regenerated tests/data/model_operations.tsv and src/catalog/usage_plans.rs; now run: cargo test --all-features --test catalog"
