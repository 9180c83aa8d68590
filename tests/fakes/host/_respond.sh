# Shared body of the fake host programs in this folder (sourced, not run).
#
# Each fake is copied into <fake host>/bin/ under the program's name and
# answers from <fake host>/fake/:
#   <name>.args    the exact arguments it expects (one line); others: exit 2
#   <name>.mode    "hang": never answer (as a wedged runtime does); the
#                  hung process's pid goes to <name>.pid
#   <name>.stdout  printed on stdout      <name>.stderr  printed on stderr
#   <name>.status  exit status (default 0)
# and each run appends "<name> <arguments>" to <fake host>/fake/calls.log.
# Shell builtins only, apart from cat and sleep, so a fake costs about what
# a small real program does.  A fake host is built by fakehost.py.
respond() {
    # cat and sleep from the system, whatever PATH the probe gave us.
    PATH=/usr/bin:/bin
    name=$1
    shift
    dir=${0%/*}/../fake
    echo "$name $*" >>"$dir/calls.log"
    if [ -f "$dir/$name.args" ]; then
        IFS= read -r expected <"$dir/$name.args"
        if [ "$*" != "$expected" ]; then
            echo "fake $name: unexpected arguments: $*" >&2
            exit 2
        fi
    fi
    mode=
    if [ -f "$dir/$name.mode" ]; then IFS= read -r mode <"$dir/$name.mode"; fi
    if [ "$mode" = hang ]; then
        echo $$ >"$dir/$name.pid"  # sleep keeps this pid: tests check it was killed
        exec sleep 600
    fi
    if [ -f "$dir/$name.stderr" ]; then cat "$dir/$name.stderr" >&2; fi
    if [ -f "$dir/$name.stdout" ]; then cat "$dir/$name.stdout"; fi
    status=0
    if [ -f "$dir/$name.status" ]; then IFS= read -r status <"$dir/$name.status"; fi
    exit "$status"
}
