#!/bin/sh
# Third-party ccTalk packet parser for tests/conformance/test_cctalk_third_party.py:
# npm serialport + @serialport/parser-cctalk into the git-ignored .peers/cctalk.
set -eu
dir=.peers/cctalk
if [ -f "$dir/node_modules/@serialport/parser-cctalk/package.json" ] \
   && [ -f "$dir/node_modules/serialport/package.json" ]; then
    exit 0
fi
mkdir -p "$dir"
npm install --no-audit --no-fund --silent --prefix "$dir" \
    serialport@12.0.0 @serialport/parser-cctalk@12.0.0 >/dev/null
