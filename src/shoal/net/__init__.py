"""The node's networking, programmed from its own replica.

It owns the pod network (pod CIDRs handed to the standard CNI plugins, the
overlay links between peers and sites), the Service rules (nftables, as
kube-proxy's nftables mode) and the cluster DNS server every peer answers.
The node agent reaches it only through the ``shoal.node.pod_network`` Protocol.
"""
