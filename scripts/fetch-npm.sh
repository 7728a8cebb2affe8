#!/usr/bin/env bash
# Fetches the pinned npm tarballs the emoji dataset is built from (recipes/emoji.yaml names the same versions) into
# ${RUSH_CACHE:-~/.cache/rush}/npm/, idempotently: a tarball already there is skipped. Needs `npm`; prints only to stderr.
set -euo pipefail

DEST="${RUSH_CACHE:-$HOME/.cache/rush}/npm"
PACKAGES=(
  emojibase-data@17.0.0
  @iconify-json/noto@1.2.9
  @iconify-json/noto-v1@1.2.5
  @iconify-json/openmoji@1.2.29
  openmoji@17.0.0
  @iconify-json/emojione@1.2.3
  @iconify-json/emojione-v1@1.2.3
  @iconify-json/emojione-monotone@1.2.1
  @iconify-json/streamline-emojis@1.2.4
  @iconify-json/fxemoji@1.2.2
  @iconify-json/twemoji@1.2.5
)

log() { echo "[fetch-npm] $*" >&2; }

# `npm pack @scope/name@1.2.3` writes `scope-name-1.2.3.tgz`.
tarball_name() {
  local spec="$1" name version
  name="${spec%@*}"
  version="${spec##*@}"
  name="${name#@}"
  echo "${name//\//-}-$version.tgz"
}

mkdir -p "$DEST"
missing=()
for spec in "${PACKAGES[@]}"; do
  [ -s "$DEST/$(tarball_name "$spec")" ] || missing+=("$spec")
done
[ "${#missing[@]}" -eq 0 ] && exit 0

if ! command -v npm >/dev/null 2>&1; then
  log "npm is not installed; cannot fetch: ${missing[*]}"
  exit 1
fi
tmp="$(mktemp -d "$DEST/.fetch.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
for spec in "${missing[@]}"; do
  file="$(tarball_name "$spec")"
  log "npm pack $spec"
  (cd "$tmp" && npm pack --silent "$spec" >/dev/null)
  [ -s "$tmp/$file" ] || { log "npm pack $spec did not write $file"; exit 1; }
  mv "$tmp/$file" "$DEST/$file"
done
