module github.hpe.com/hpe/hpc-ard-launcher-go/launcher

go 1.22.0
