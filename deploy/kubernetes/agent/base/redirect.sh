#!/bin/sh
# The DNAT of 169.254.169.254:80 from the node's pods to the agent (NODE_IP:8988), with the
# host's iptables backend: `install` (once, before the agent starts), `keep` (every 30 s until
# stopped: a firewall reload may drop the rule), `remove` (when the agent's pod goes).
set -u
rule="-d 169.254.169.254/32 -p tcp --dport 80 -j DNAT --to-destination ${NODE_IP}:8988"
# The backend holding more nat rules is the host's (kube-proxy's and the CNI's), as kube-proxy's
# own iptables wrapper decides.
count() { "$1" -t nat 2>/dev/null | grep -c '^-'; }
if [ "$(count iptables-legacy-save)" -gt "$(count iptables-nft-save)" ]; then
    ipt=iptables-legacy
else
    ipt=iptables-nft
fi
# shellcheck disable=SC2086 # the rule is words
ensure() { $ipt -w -t nat -C PREROUTING $rule 2>/dev/null || $ipt -w -t nat -I PREROUTING $rule; }
case "${1:-}" in
    install) ensure ;;
    keep)
        trap 'exit 0' TERM INT
        while true; do
            ensure || echo "cannot install the metadata redirection with $ipt" >&2
            sleep 30 &
            wait $!
        done
        ;;
    # shellcheck disable=SC2086
    remove) while $ipt -w -t nat -D PREROUTING $rule 2>/dev/null; do :; done ;;
    *)
        echo "usage: redirect.sh install|keep|remove" >&2
        exit 2
        ;;
esac
