module github.com/kumametrics/mesh

go 1.26.8

require (
	github.com/prometheus/common v0.73.1
	go.yaml.in/yaml/v2 v2.4.4
	sigs.k8s.io/yaml v1.6.0
)

require (
	github.com/prometheus/client_model v0.6.3 // indirect
	google.golang.org/protobuf v1.36.12 // indirect
)
