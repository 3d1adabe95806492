variable "member_name" {
  type        = string
  description = "etcd member name of this instance (ETCD_NAME); must appear in initial_cluster."
}

variable "private_ip" {
  type        = string
  description = "Private IPv4 address of this member: it listens and advertises there."
}

variable "initial_cluster" {
  type        = map(string)
  description = "Every member of the new cluster: member name => private IPv4 address."
}

variable "cluster_token" {
  type        = string
  description = "ETCD_INITIAL_CLUSTER_TOKEN: unique per cluster, so that members of two clusters never join each other."
}

variable "client_port" {
  type        = number
  description = "etcd client port (2379 by convention)."
}

variable "peer_port" {
  type        = number
  description = "etcd peer port (2380 by convention)."
}
