output "control_plane_endpoint" {
  description = "gRPC endpoint of the control plane (load balancer). For grpcurl, drop the http:// : grpcurl -plaintext HOST:7400 list."
  value       = module.control_plane.grpc_endpoint
}

output "control_plane_metrics_urls" {
  description = "/metrics of every control-plane replica (private addresses)."
  value       = module.control_plane.metrics_urls
}

output "etcd_endpoints" {
  description = "etcd client URLs (reachable only from the control plane and the members)."
  value       = module.etcd.client_endpoints
}

output "node_urls" {
  description = "Public base URL of every node, by region then node id. Play a stream at URL/play/STREAM; publish with WHIP at URL/whip/STREAM."
  value = {
    eu = module.region_eu.node_urls
    us = module.region_us.node_urls
    ap = module.region_ap.node_urls
  }
}

output "node_public_ips" {
  description = "Elastic IP of every node, by region."
  value = {
    eu = module.region_eu.public_ips
    us = module.region_us.public_ips
    ap = module.region_ap.public_ips
  }
}

output "node_instance_ids" {
  description = "EC2 instance id of every node, by region then node id (for rolling upgrades)."
  value = {
    eu = module.region_eu.instance_ids
    us = module.region_us.instance_ids
    ap = module.region_ap.instance_ids
  }
}
