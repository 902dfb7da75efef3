#!/usr/bin/env bash
# Runs the blocks of a document marked `<!-- runnable -->` (the fenced block right after the
# marker), each in a fresh directory, as written, and reports them as libtest does so that
# ci/test.sh counts them.
#
#   ci/recipes.sh SBX_DIR [DOC...]      # default DOC: docs/ci.md
#
# SBX_DIR holds the sbx and sbx-pull binaries under test; it goes first on PATH. Run it as the
# user the recipes are written for (ci/test.sh runs it as the unprivileged test user).
set -euo pipefail
bin=$1; shift
docs=("$@")
[ ${#docs[@]} -gt 0 ] || docs=("$(dirname "$0")/../docs/ci.md")
work=$(mktemp -d "${TMPDIR:-/tmp}/sbx-recipes.XXXXXX")
trap 'rm -rf "$work"' EXIT
passed=0 failed=0
for doc in "${docs[@]}"; do
  split=$work/blocks
  rm -rf "$split" && mkdir -p "$split"
  python3 - "$doc" "$split" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
for i, m in enumerate(re.finditer(r"<!-- runnable -->\s*\n```(\w+)\n(.*?)\n```", text, re.S)):
    line = text[: m.start()].count("\n") + 1
    open(f"{sys.argv[2]}/{i:03d}-{line}.sh", "w").write(m.group(2) + "\n")
PY
  for block in "$split"/*.sh; do
    [ -e "$block" ] || continue
    name="$(basename "$doc"):$(basename "$block" .sh | cut -d- -f2)"
    dir=$(mktemp -d "$work/run.XXXXXX")
    if (cd "$dir" && PATH="$bin:$PATH" bash -euo pipefail "$block") >"$dir.out" 2>&1; then
      echo "test $name ... ok"
      passed=$((passed + 1))
    else
      echo "test $name ... FAILED"
      sed 's/^/    /' "$dir.out"
      failed=$((failed + 1))
    fi
  done
done
status=ok
[ $failed = 0 ] || status=FAILED
echo "test result: $status. $passed passed; $failed failed; 0 ignored; 0 measured; 0 filtered out"
[ $failed = 0 ]
