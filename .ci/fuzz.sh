#!/usr/bin/env bash
# Runs every Fuzz* target in the module for FUZZTIME (default 15s) each, one
# at a time (go test -fuzz takes a single package and a single target).
# A package whose tests fail to build or list is reported and makes the script
# fail, after the targets that could be listed have run.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

GO=${GO:-go}
FUZZTIME=${FUZZTIME:-15s}

list_out=$(mktemp)
trap 'rm -f "$list_out"' EXIT

# `go test -list` prints the matching names, then "ok  <pkg>  <time>" for
# that package (or "?  <pkg> [no test files]", or "FAIL <pkg> ..." on error).
list_rc=0
"$GO" test -list '^Fuzz' ./... >"$list_out" 2>&1 || list_rc=$?

targets=() # "pkg name"
pending=()
failed=()
while IFS= read -r line; do
	case "$line" in
	Fuzz*)
		pending+=("${line%%[[:space:]]*}")
		;;
	ok[[:space:]]*)
		pkg=$(awk '{print $2}' <<<"$line")
		for name in ${pending[@]+"${pending[@]}"}; do
			targets+=("$pkg $name")
		done
		pending=()
		;;
	FAIL[[:space:]]*)
		failed+=("$(awk '{print $2}' <<<"$line")")
		pending=()
		;;
	'?'[[:space:]]*) ;;
	esac
done <"$list_out"

if ((list_rc != 0)) || ((${#failed[@]} > 0)); then
	echo "fuzz: listing fuzz targets failed (exit $list_rc):" >&2
	grep -v '^\(Fuzz\|ok \|?  \)' "$list_out" >&2 || true
fi

echo "fuzz: ${#targets[@]} target(s), $FUZZTIME each"
rc=0
for ((i = 0; i < ${#targets[@]}; i++)); do
	pkg=${targets[i]% *}
	name=${targets[i]#* }
	echo "fuzz: $pkg $name"
	out=$(mktemp)
	# On a loaded machine Go's fuzz coordinator can give up with "context
	# deadline exceeded" without any failing input (golang/go#75804): that
	# run is retried once; a real failure writes a testdata/fuzz input and
	# is never retried.
	for attempt in 1 2; do
		if "$GO" test -run '^$' -fuzz "^${name}\$" -fuzztime "$FUZZTIME" "$pkg" 2>&1 | tee "$out"; then
			break
		fi
		if ((attempt == 1)) && grep -q 'context deadline exceeded' "$out" && ! grep -q 'Failing input written' "$out"; then
			echo "fuzz: coordinator timed out without a failing input; retrying $name once" >&2
			continue
		fi
		echo "fuzz: FAILED: $pkg $name" >&2
		rc=1
		break
	done
	rm -f "$out"
done

if ((list_rc != 0)) || ((${#failed[@]} > 0)); then
	echo "fuzz: packages that could not be listed: ${failed[*]:-(see output above)}" >&2
	rc=1
fi
exit "$rc"
