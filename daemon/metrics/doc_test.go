package metrics

import (
	"os"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// TestMonitoringDoc: docs/monitoring.md's reference has a row for every
// metric, with its type, its labels and its HELP text as a scrape shows
// them.
func TestMonitoringDoc(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile("../../docs/monitoring.md")
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(NewCollector(fixedSnapshot))
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	if len(families) != len(allDescs) {
		t.Fatalf("the fixed snapshot shows %d metrics of %d: the test proves too little", len(families), len(allDescs))
	}
	for _, mf := range families {
		var labels []string
		for _, l := range mf.Metric[0].Label {
			labels = append(labels, "`"+l.GetName()+"`")
		}
		if len(labels) == 0 {
			labels = []string{"none"}
		}
		row := "| `" + mf.GetName() + "` | " + strings.ToLower(mf.GetType().String()) + " | " + strings.Join(labels, ", ") + " | " + mf.GetHelp() + " |"
		if !strings.Contains(string(data), row+"\n") {
			t.Errorf("docs/monitoring.md lacks the row\n%s", row)
		}
	}
}
