#!/bin/sh
# tests/layers.sh: the daemon's module rules on its sources (test `layers`;
# daemon/README.md "Layers", docs/ARCHITECTURE.md "Modules and errors").
# Each failed rule prints one line naming the file; exit 1 if any failed.
cd "$(dirname "$0")/../daemon" || exit 1
bad=0
fail() { echo "layers: $*"; bad=1; }

# 1. a gRPC status code is made in rpc.c and nowhere else
for f in *.c *.h; do
    [ "$f" = rpc.c ] && continue
    grep -q 'GRPC_STATUS_[A-Z]' "$f" && fail "$f names a GRPC_STATUS_ code (only rpc.c translates errors)"
done

# 2. daemon.h is data: no function of another module is declared there
if grep -E '^[a-z0-9_ ]+[ *]grist__[a-z0-9_]+\(' daemon.h | grep -vq '^static inline'; then
    fail "daemon.h declares a function (each module has its own header)"
fi

# 3. the registry and what it stands on know nothing of gRPC or of the modules above
for f in config log auth wire engine jobs publish histogram; do
    for x in "$f.c" "$f.h"; do
        [ -f "$x" ] || continue
        grep -q '#include <grpc' "$x" && fail "$x includes a gRPC header"
        for up in net rpc attach query health http http_impl snapshot probe fanout tls; do
            grep -q "#include \"$up.h\"" "$x" && fail "$x includes $up.h, a module above it"
        done
    done
done

# 4. net.c dispatches from the table it is given: it knows no handler or job
for up in attach query health jobs daemon snapshot http; do
    grep -q "#include \"$up.h\"" net.c && fail "net.c includes $up.h"
done

# 5. handlers do not call each other; only main.c wires them
for h in attach health; do
    for f in *.c; do
        case "$f" in main.c | "$h.c") continue ;; esac
        grep -q "#include \"$h.h\"" "$f" && fail "$f includes $h.h (only main.c may)"
    done
done
grep -q '#include "attach.h"' query.c && fail "query.c includes attach.h"
grep -q '#include "query.h"' attach.c && fail "attach.c includes query.h"

# 6. one header per module (api.c and metrics.c are views of http: http_impl.h)
for f in *.c; do
    m=${f%.c}
    case "$m" in main | api | metrics) continue ;; esac
    [ -f "$m.h" ] || fail "$f has no header $m.h"
done

[ $bad -eq 0 ] && echo "layers: every rule holds"
exit $bad
