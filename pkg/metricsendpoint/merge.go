package metricsendpoint

import (
	"bytes"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strings"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
)

// writeApplications resolves name collisions, records every application's
// outcome and writes the merged families in application order. Each
// application is encoded into a buffer first, so an application whose
// families cannot be encoded is left out whole, never written in part.
//
// filter (the scrape's filter parameter, nil for none) keeps only the
// application families whose final name it matches, as the proxy's
// statistics are kept by their dotted names; collisions are decided on
// every family, so a filter never changes a name.
func (e *Endpoint) writeApplications(w io.Writer, om bool, apps []*app, results []appResult, filter *regexp.Regexp) error {
	proxy := e.proxyFamilyNames()
	claimed := make(nameSet) // names taken by earlier applications in this scrape
	buf := bodyBuffers.Get().(*bytes.Buffer)
	defer putBodyBuffer(buf)
	for i, a := range apps {
		res := results[i]
		if res.err != nil {
			e.recordFailure(a, res)
			// Keep the names of its last good answer reserved, so that a
			// later application's family is not renamed one scrape and
			// plain the next.
			if last := a.st.claims.Load(); last != nil {
				for n := range *last {
					if _, taken := claimed[n]; !taken {
						claimed[n] = a.name
					}
				}
			}
			continue
		}
		fams, own, dropped, renamed := e.resolve(a, res.fams, proxy, claimed)
		if filter != nil {
			fams = slices.DeleteFunc(slices.Clone(fams), func(mf *dto.MetricFamily) bool { return !filter.MatchString(mf.GetName()) })
		}
		buf.Reset()
		if err := encodeFamilies(buf, fams, om); err != nil {
			e.recordFailure(a, appResult{reason: reasonParse, err: err, dur: res.dur})
			continue
		}
		for n := range own {
			claimed[n] = a.name
		}
		a.st.claims.Store(&own)
		e.recordSuccess(a, res, dropped, renamed)
		if _, err := w.Write(buf.Bytes()); err != nil {
			return err
		}
	}
	return nil
}

// resolve decides the fate of each family of one application: kept as is;
// dropped when it collides with the proxy's families (or with another of
// its own); renamed to <app>_<family> when it collides with an earlier
// application's, or dropped if that name is taken too. It returns the
// families to write, sorted by their final names,
// and the names they occupy.
func (e *Endpoint) resolve(a *app, fams []*dto.MetricFamily, proxy, claimed nameSet) (out []*dto.MetricFamily, own nameSet, dropped, renamed int) {
	own = make(nameSet)
	var names []string
	var rename []*dto.MetricFamily
	out = make([]*dto.MetricFamily, 0, len(fams))
	for _, mf := range fams {
		name := mf.GetName()
		names = reservedNames(names[:0], name, mf.GetType())
		if _, hit := proxy.owner(names); hit {
			dropped++
			e.logCollisionOnce(a, "dropped", name, "collides_with", "proxy")
			continue
		}
		if _, hit := claimed.owner(names); hit {
			rename = append(rename, mf)
			continue
		}
		if _, hit := own.owner(names); hit {
			dropped++
			e.logCollisionOnce(a, "dropped", name, "collides_with", "another family of the same application")
			continue
		}
		own.add(names, a.name)
		out = append(out, mf)
	}
	for _, mf := range rename {
		name := mf.GetName()
		other, _ := claimed.owner(reservedNames(names[:0], name, mf.GetType()))
		newName := a.prefix + name
		names = reservedNames(names[:0], newName, mf.GetType())
		_, inProxy := proxy.owner(names)
		_, inOther := claimed.owner(names)
		_, inOwn := own.owner(names)
		if inProxy || inOther || inOwn {
			dropped++
			e.logCollisionOnce(a, "dropped", name, "collides_with", other, "renamed_collides_too", newName)
			continue
		}
		renamed++
		e.logCollisionOnce(a, "renamed", name, "collides_with", other, "new_name", newName)
		own.add(names, a.name)
		mf.Name = &newName
		out = append(out, mf)
	}
	if len(rename) > 0 {
		slices.SortFunc(out, func(a, b *dto.MetricFamily) int { return strings.Compare(a.GetName(), b.GetName()) })
	}
	return out, own, dropped, renamed
}

// encodeFamilies writes families in the text format or, with om, as
// OpenMetrics without the final # EOF.
func encodeFamilies(buf *bytes.Buffer, fams []*dto.MetricFamily, om bool) error {
	for _, mf := range fams {
		var err error
		if om {
			if err = checkOpenMetrics(mf); err == nil {
				_, err = expfmt.MetricFamilyToOpenMetrics(buf, mf)
			}
		} else {
			_, err = expfmt.MetricFamilyToText(buf, mf)
		}
		if err != nil {
			return fmt.Errorf("encoding %s: %w", mf.GetName(), err)
		}
	}
	return nil
}
