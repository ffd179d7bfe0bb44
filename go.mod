module github.com/sluicelb/sluice

go 1.26
