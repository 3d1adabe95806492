# Renders the cloud-init user data of one etcd member: Debian's etcd-server package, configured
# by a systemd drop-in that points the packaged etcd.service at /etc/strata/etcd.env.
# The cluster bootstraps statically (every member's address is known in advance), plain HTTP:
# strata-control has no etcd TLS options, so the security groups are the only protection.

locals {
  env = {
    ETCD_NAME                        = var.member_name
    ETCD_DATA_DIR                    = "/var/lib/etcd/strata"
    ETCD_LISTEN_PEER_URLS            = "http://${var.private_ip}:${var.peer_port}"
    ETCD_LISTEN_CLIENT_URLS          = "http://${var.private_ip}:${var.client_port},http://127.0.0.1:${var.client_port}"
    ETCD_INITIAL_ADVERTISE_PEER_URLS = "http://${var.private_ip}:${var.peer_port}"
    ETCD_ADVERTISE_CLIENT_URLS       = "http://${var.private_ip}:${var.client_port}"
    ETCD_INITIAL_CLUSTER             = join(",", [for name, ip in var.initial_cluster : "${name}=http://${ip}:${var.peer_port}"])
    ETCD_INITIAL_CLUSTER_STATE       = "new"
    ETCD_INITIAL_CLUSTER_TOKEN       = var.cluster_token
    # Compact old revisions hourly; strata keeps only live state in etcd.
    ETCD_AUTO_COMPACTION_MODE      = "periodic"
    ETCD_AUTO_COMPACTION_RETENTION = "1h"
  }

  user_data = templatefile("${path.module}/cloud-init.yaml.tftpl", {
    member_name = var.member_name
    env         = local.env
  })
}
