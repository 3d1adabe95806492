output "control_plane_endpoint" {
  description = "gRPC endpoint of the control plane (https://control_plane_dns_name:7400), the one the nodes use; for strata-control nodes|streams|stream|drain with --ca-cert CERTS_DIR/ca.pem and an operator token."
  value       = module.control_plane.grpc_endpoint
}

output "control_plane_grpc_address" {
  description = "HOST:PORT of the control plane for grpcurl: grpcurl -cacert CERTS_DIR/ca.pem -H \"authorization: Bearer $TOKEN\" HOST:PORT list."
  value       = module.control_plane.grpc_address
}

output "control_plane_load_balancer" {
  description = "DNS name of the control plane's load balancer: control_plane_dns_name must be a CNAME of it (created only with control_plane_route53_zone_id)."
  value       = module.control_plane.load_balancer_dns_name
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
