#!/bin/sh
# The DNAT of the metadata address from the node's pods to the agent, for each of the node's
# addresses in NODE_IPS (the downward API's status.hostIPs, comma-separated; else NODE_IP):
# 169.254.169.254:80 to NODE_IP:8988 for an IPv4 address, GKE's IPv6 metadata address
# [fd20:ce::254]:80 to [NODE_IP]:8988 for an IPv6 one. With the host's iptables backend:
# `install` (once, before the agent starts), `keep` (every 30 s until stopped: a firewall reload
# may drop a rule), `remove` (when the agent's pod goes).
set -u
ips="${NODE_IPS:-${NODE_IP:-}}"
if [ -z "$ips" ]; then
    echo "redirect.sh: NODE_IPS (or NODE_IP) must name the node's addresses" >&2
    exit 2
fi
# The backend holding more nat rules is the host's (kube-proxy's and the CNI's), as kube-proxy's
# own iptables wrapper decides, counted in both families (an IPv6-only node has IPv6 rules
# only); both families use the one found.
count() { "$1" -t nat 2>/dev/null | grep -c '^-'; }
rules_of() { echo $(($(count "iptables-$1-save") + $(count "ip6tables-$1-save"))); }
if [ "$(rules_of legacy)" -gt "$(rules_of nft)" ]; then
    backend=legacy
else
    backend=nft
fi

# One line per address: the program of its family, then its rule.
rules() {
    old_ifs=$IFS
    IFS=,
    for ip in $ips; do
        case "$ip" in
            *:*) echo "ip6tables-$backend -d fd20:ce::254/128 -p tcp --dport 80 -j DNAT --to-destination [$ip]:8988" ;;
            ?*) echo "iptables-$backend -d 169.254.169.254/32 -p tcp --dport 80 -j DNAT --to-destination $ip:8988" ;;
        esac
    done
    IFS=$old_ifs
}

# shellcheck disable=SC2086 # a rule is words
ensure() {
    rules | {
        status=0
        while read -r ipt rule; do
            $ipt -w -t nat -C PREROUTING $rule 2>/dev/null || $ipt -w -t nat -I PREROUTING $rule || {
                echo "cannot install the metadata redirection with $ipt" >&2
                status=1
            }
        done
        exit $status
    }
}

# shellcheck disable=SC2086
remove() {
    rules | while read -r ipt rule; do
        while $ipt -w -t nat -D PREROUTING $rule 2>/dev/null; do :; done
    done
}

case "${1:-}" in
    install) ensure ;;
    keep)
        trap 'exit 0' TERM INT
        while true; do
            ensure
            sleep 30 &
            wait $!
        done
        ;;
    remove) remove ;;
    *)
        echo "usage: redirect.sh install|keep|remove" >&2
        exit 2
        ;;
esac
