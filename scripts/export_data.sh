#!/usr/bin/env bash
# Exports real data sets shipped in Debian's R packages to plain files:
#   cps1988.csv        AER::CPS1988 (U.S. Current Population Survey, March 1988)
#   stackoverflow.csv  modeldata::stackoverflow (Stack Overflow 2017 survey salaries)
#   janeausten.txt     janeaustenr's six novels, in the order of austen_books()
# plus provenance.json (package, Debian version, licence, object, shape, sha256, date).
#
# The .deb files are fetched with `apt-get download` and unpacked with `dpkg-deb -x`
# into a private directory, so neither the packages nor their R dependencies are
# installed; R's data() reads the objects straight from the unpacked library.
#
# Idempotent: downloads are cached, and nothing is exported again when every output
# exists and matches the sha256 recorded in provenance.json (unless --force).
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT_DIR="$REPO_ROOT/data"
CACHE_DIR=""
FORCE=0
FIXTURES=0

usage() {
  cat <<EOF
usage: scripts/export_data.sh [--out DIR] [--cache DIR] [--force] [--fixtures]
  --out DIR     where to write the exported files (default: data/)
  --cache DIR   where to keep downloaded .deb files (default: data/cache/)
  --force       export again even if the outputs match provenance.json
  --fixtures    also write DIR/fixtures/cps1988_small.csv (600 rows, set.seed(1))
EOF
}

while [ $# -gt 0 ]; do
  case "$1" in
    --out) [ $# -ge 2 ] || { usage >&2; exit 2; }; OUT_DIR="$2"; shift 2 ;;
    --cache) [ $# -ge 2 ] || { usage >&2; exit 2; }; CACHE_DIR="$2"; shift 2 ;;
    --force) FORCE=1; shift ;;
    --fixtures) FIXTURES=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "export_data: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
done
[ -n "$CACHE_DIR" ] || CACHE_DIR="$REPO_ROOT/data/cache"

die() { echo "export_data: error: $*" >&2; exit 1; }

# name|Debian package|R package|R object(s)|output file
DATASETS=(
  "cps1988|r-cran-aer|AER|CPS1988|cps1988.csv"
  "stackoverflow|r-cran-modeldata|modeldata|stackoverflow|stackoverflow.csv"
  "janeausten|r-cran-janeaustenr|janeaustenr|sensesensibility,prideprejudice,mansfieldpark,emma,northangerabbey,persuasion|janeausten.txt"
)

mkdir -p "$OUT_DIR" "$CACHE_DIR"
OUT_DIR="$(cd "$OUT_DIR" && pwd)"
CACHE_DIR="$(cd "$CACHE_DIR" && pwd)"
PROVENANCE="$OUT_DIR/provenance.json"

# Prints the sha256 recorded for file $1 in provenance.json (empty if none).
recorded_sha() {
  [ -f "$PROVENANCE" ] || return 0
  awk -v f="\"file\": \"$1\"" '
    index($0, f) { hit = 1; next }
    hit && /"sha256":/ { gsub(/.*"sha256": "|".*/, ""); print; exit }
    /}/ { hit = 0 }' "$PROVENANCE"
}

up_to_date() {
  local entry file
  [ -f "$PROVENANCE" ] || return 1
  for entry in "${DATASETS[@]}"; do
    file="${entry##*|}"
    [ -f "$OUT_DIR/$file" ] || return 1
    [ "$(sha256sum "$OUT_DIR/$file" | cut -d' ' -f1)" = "$(recorded_sha "$file")" ] || return 1
  done
}

command -v Rscript >/dev/null 2>&1 ||
  die "Rscript not found: install the Debian package r-base-core (scripts/setup.sh installs it)"

if [ "$FORCE" -eq 0 ] && up_to_date; then
  echo "export_data: outputs in $OUT_DIR match $PROVENANCE, nothing to do (use --force to redo)"
  EXPORT=0
else
  EXPORT=1
fi

LIB_ROOT="$CACHE_DIR/rlib-root"
LIB="$LIB_ROOT/usr/lib/R/site-library"

newest_deb() {  # newest cached .deb of package $1, empty if none
  local debs=("$CACHE_DIR/$1"_*.deb)
  [ -e "${debs[0]}" ] || return 0
  printf "%s\n" "${debs[@]}" | sort -V | tail -n 1
}

# Prints the path of the cached .deb of package $1, downloading it if needed.
fetch_deb() {
  local pkg="$1" deb tmp
  deb="$(newest_deb "$pkg")"
  if [ -z "$deb" ]; then
    command -v apt-get >/dev/null 2>&1 || die "apt-get not found: cannot download $pkg"
    tmp="$(mktemp -d "$CACHE_DIR/download.XXXXXX")"
    if ! (cd "$tmp" && apt-get download "$pkg") >"$tmp/log" 2>&1; then
      cat "$tmp/log" >&2
      rm -rf "$tmp"
      die "apt-get download $pkg failed (run 'apt-get update' first if the package is not found)"
    fi
    mv "$tmp"/"${pkg}"_*.deb "$CACHE_DIR/"
    rm -rf "$tmp"
    deb="$(newest_deb "$pkg")"
  fi
  echo "$deb"
}

json_str() {  # JSON string literal of $1
  local s="${1//\\/\\\\}"
  printf '"%s"' "${s//\"/\\\"}"
}

# R code per data set; commandArgs: library path, output file. Each prints "rows columns".
R_CPS1988='a <- commandArgs(TRUE)
options(scipen = 100)  # 100000, not 1e+05
data(CPS1988, package = "AER", lib.loc = a[1])
write.csv(CPS1988, a[2], row.names = FALSE)
cat(nrow(CPS1988), ncol(CPS1988), "\n")'

R_STACKOVERFLOW='a <- commandArgs(TRUE)
options(scipen = 100)
data(stackoverflow, package = "modeldata", lib.loc = a[1])
x <- as.data.frame(stackoverflow)  # a tibble; tibble itself is not needed to write it
write.csv(x, a[2], row.names = FALSE)
cat(nrow(x), ncol(x), "\n")'

# Same books and order as janeaustenr::austen_books(); one blank line between books.
R_JANEAUSTEN='a <- commandArgs(TRUE)
books <- c("sensesensibility", "prideprejudice", "mansfieldpark",
           "emma", "northangerabbey", "persuasion")
e <- new.env()
data(list = books, package = "janeaustenr", lib.loc = a[1], envir = e)
lines <- unlist(lapply(seq_along(books), function(i)
  c(if (i > 1) "", get(books[i], envir = e))))
con <- file(a[2], "wb")
writeLines(enc2utf8(lines), con, useBytes = TRUE)
close(con)
cat(length(lines), 1, "\n")'

if [ "$EXPORT" -eq 1 ]; then
  mkdir -p "$LIB_ROOT"
  today="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  entries=()
  for entry in "${DATASETS[@]}"; do
    IFS='|' read -r name debpkg rpkg objects file <<<"$entry"
    deb="$(fetch_deb "$debpkg")"
    dpkg-deb -x "$deb" "$LIB_ROOT" || die "dpkg-deb -x $deb failed"
    version="$(dpkg-deb -f "$deb" Version)"
    [ -f "$LIB/$rpkg/DESCRIPTION" ] || die "$deb has no $LIB/$rpkg/DESCRIPTION"
    license="$(sed -n 's/^License:[[:space:]]*//p' "$LIB/$rpkg/DESCRIPTION" | head -n 1)"

    case "$name" in
      cps1988) code="$R_CPS1988" ;;
      stackoverflow) code="$R_STACKOVERFLOW" ;;
      janeausten) code="$R_JANEAUSTEN" ;;
    esac
    tmp_out="$OUT_DIR/.$file.tmp"
    if ! shape="$(Rscript -e "$code" "$LIB" "$tmp_out")"; then
      rm -f "$tmp_out"
      die "Rscript failed to export $rpkg::$objects"
    fi
    mv "$tmp_out" "$OUT_DIR/$file"
    read -r rows cols <<<"$shape"
    sha="$(sha256sum "$OUT_DIR/$file" | cut -d' ' -f1)"
    echo "exported $OUT_DIR/$file: $rows rows, $cols columns, sha256 ${sha:0:12}"

    entries+=("    {
      \"file\": $(json_str "$file"),
      \"source_package\": $(json_str "$rpkg"),
      \"debian_package\": $(json_str "$debpkg"),
      \"debian_version\": $(json_str "$version"),
      \"license\": $(json_str "$license"),
      \"r_object\": $(json_str "$objects"),
      \"rows\": $rows,
      \"columns\": $cols,
      \"sha256\": $(json_str "$sha"),
      \"exported\": $(json_str "$today")
    }")
  done

  {
    echo "{"
    echo "  \"generated_by\": \"scripts/export_data.sh\","
    echo "  \"files\": ["
    for i in "${!entries[@]}"; do
      if [ "$i" -lt $((${#entries[@]} - 1)) ]; then echo "${entries[$i]},"; else echo "${entries[$i]}"; fi
    done
    echo "  ]"
    echo "}"
  } >"$PROVENANCE.tmp"
  mv "$PROVENANCE.tmp" "$PROVENANCE"
  echo "export_data: wrote $PROVENANCE"
else
  for entry in "${DATASETS[@]}"; do
    file="${entry##*|}"
    echo "up to date $OUT_DIR/$file: sha256 $(recorded_sha "$file" | cut -c1-12)"
  done
fi

if [ "$FIXTURES" -eq 1 ]; then
  # A deterministic sample of real rows: R >= 3.6 sample() with set.seed(1), kept in file order.
  mkdir -p "$OUT_DIR/fixtures"
  [ -f "$LIB/AER/DESCRIPTION" ] || dpkg-deb -x "$(fetch_deb r-cran-aer)" "$LIB_ROOT"
  Rscript -e 'a <- commandArgs(TRUE)
options(scipen = 100)
data(CPS1988, package = "AER", lib.loc = a[1])
set.seed(1)
idx <- sort(sample(nrow(CPS1988), 600))
write.csv(CPS1988[idx, ], a[2], row.names = FALSE)' "$LIB" "$OUT_DIR/fixtures/cps1988_small.csv" ||
    die "Rscript failed to write the fixture"
  echo "fixture $OUT_DIR/fixtures/cps1988_small.csv: 600 rows," \
    "sha256 $(sha256sum "$OUT_DIR/fixtures/cps1988_small.csv" | cut -c1-12)"
fi
