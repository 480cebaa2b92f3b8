"""End-to-end tests against a real kube-apiserver and etcd, with the real kubectl and helm."""
