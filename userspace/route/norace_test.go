package route

var raceEnabled bool
