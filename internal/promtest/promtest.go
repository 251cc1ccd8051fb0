// Package promtest reads metrics in the Prometheus text format for tests,
// with the parser of github.com/prometheus/common: what a Prometheus
// server would read, not what a regular expression guesses.
package promtest

import (
	"fmt"
	"io"
	"net/http"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Metrics is a parsed scrape: the metric families by name.
type Metrics map[string]*dto.MetricFamily

// Scrape fetches url and parses the answer.
func Scrape(url string) (Metrics, error) {
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return Parse(resp.Body)
}

// Parse reads the text format, with the metric names of the classic
// (legacy) rules.
func Parse(r io.Reader) (Metrics, error) {
	p := expfmt.NewTextParser(model.LegacyValidation)
	return p.TextToMetricFamilies(r)
}

// Value returns the value of the metric name whose labels include every
// pair of labels (name, value, name, value...), and whether there is
// exactly one such metric.
func (m Metrics) Value(name string, labels ...string) (float64, bool) {
	mf := m[name]
	if mf == nil {
		return 0, false
	}
	var found []*dto.Metric
	for _, metric := range mf.GetMetric() {
		if hasLabels(metric, labels) {
			found = append(found, metric)
		}
	}
	if len(found) != 1 {
		return 0, false
	}
	switch mf.GetType() {
	case dto.MetricType_COUNTER:
		return found[0].GetCounter().GetValue(), true
	case dto.MetricType_GAUGE:
		return found[0].GetGauge().GetValue(), true
	case dto.MetricType_UNTYPED:
		return found[0].GetUntyped().GetValue(), true
	}
	return 0, false
}

func hasLabels(metric *dto.Metric, labels []string) bool {
	for i := 0; i+1 < len(labels); i += 2 {
		ok := false
		for _, lp := range metric.GetLabel() {
			if lp.GetName() == labels[i] && lp.GetValue() == labels[i+1] {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	return true
}
