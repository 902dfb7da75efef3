#!/usr/bin/env bash
# Builds the Debian package: a stripped release build of sbx, sbx-pull and sbx-oci, completions and
# man pages generated from the built binary's own clap definitions, the AppArmor profile.
#
#   ci/package.sh                # prints the path of target/debian/sbx_VERSION_ARCH.deb
#
# Needs cargo-deb (`cargo install cargo-deb`); installs it when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v cargo-deb >/dev/null 2>&1; then
  echo "ci/package.sh: installing cargo-deb" >&2
  # From / so this project's .cargo/config.toml (static, explicit target) stays out of it.
  (cd / && cargo install cargo-deb --locked --quiet)
fi
cargo build --release --quiet
# Static builds land under target/<host tuple>/ (.cargo/config.toml); cargo deb is told the
# tuple, so the assets' target/release/ paths point there.
tuple=$(rustc --print host-tuple)
assets=target/assets
rm -rf "$assets"
mkdir -p "$assets/man"
sbx=target/$tuple/release/sbx
"$sbx" completion bash >"$assets/sbx.bash"
"$sbx" completion zsh >"$assets/_sbx"
"$sbx" completion fish >"$assets/sbx.fish"
"$sbx" man | gzip -9n >"$assets/man/sbx.1.gz"
for sub in $("$sbx" man --list); do
  "$sbx" man "$sub" | gzip -9n >"$assets/man/sbx-$sub.1.gz"
done
# The release profile strips already.
cargo deb --no-build --no-strip --target "$tuple"
