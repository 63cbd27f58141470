// Command cert-manager-controller runs the part of cert-manager's controller
// that issues certificates from self-signed and CA Issuers, wired from the
// library packages of github.com/cert-manager/cert-manager (whose own
// cmd/controller module is not published on the Go module proxy). It follows
// cmd/controller/app/controller.go of the same release, minus leader election,
// the metrics/healthz/pprof servers, ACME, Vault, Venafi, ClusterIssuers and
// the ingress/gateway shims.
//
//	cert-manager-controller --kubeconfig admin.kubeconfig [--v=2]
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"sort"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"
	"k8s.io/klog/v2"

	controllerpkg "github.com/cert-manager/cert-manager/pkg/controller"
	logf "github.com/cert-manager/cert-manager/pkg/logs"

	// Each controller package registers itself with controllerpkg in init();
	// importing it is what makes it part of controllerpkg.Known().
	//
	// Issuers: sets Ready on Issuer objects (selfSigned, ca).
	_ "github.com/cert-manager/cert-manager/pkg/controller/issuers"
	// CertificateRequests: approve every request (there is no policy engine
	// here, as in a default install), then sign it with the issuer's type.
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/approver"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/ca"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificaterequests/selfsigned"
	// Certificates: decide to issue (trigger), make the private key
	// (key-manager), create the CertificateRequest (request-manager), write
	// the Secret (issuing) and set the Ready condition (readiness).
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/issuing"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/keymanager"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/readiness"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/requestmanager"
	_ "github.com/cert-manager/cert-manager/pkg/controller/certificates/trigger"
	// Issuer implementations the issuers controller looks up by type.
	_ "github.com/cert-manager/cert-manager/pkg/issuer/ca"
	_ "github.com/cert-manager/cert-manager/pkg/issuer/selfsigned"
)

func main() {
	klog.InitFlags(nil) // --v and klog's other flags
	kubeconfig := flag.String("kubeconfig", "", "kubeconfig of the cluster to act on (required)")
	workers := flag.Int("workers", 2, "concurrent workers per controller")
	flag.Parse()
	if *kubeconfig == "" {
		fmt.Fprintln(os.Stderr, "cert-manager-controller: --kubeconfig is required")
		os.Exit(2)
	}
	logf.InitLogs()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *kubeconfig, *workers); err != nil {
		klog.ErrorS(err, "cert-manager-controller failed")
		klog.Flush()
		os.Exit(1)
	}
}

func run(ctx context.Context, kubeconfig string, workers int) error {
	log := klog.Background().WithName("cert-manager-controller")
	ctx = logf.NewContext(ctx, log)

	// The factory builds one Context (clients with their own user agent, event
	// recorder) per controller; the informer factories are shared by all.
	// Values are cert-manager's defaults
	// (internal/apis/config/controller/v1alpha1/defaults.go).
	factory, err := controllerpkg.NewContextFactory(ctx, controllerpkg.ContextOptions{
		Kubeconfig:         kubeconfig,
		KubernetesAPIQPS:   20,
		KubernetesAPIBurst: 50,
		IssuerOptions: controllerpkg.IssuerOptions{
			ClusterResourceNamespace: "cert-manager",
		},
		CertificateOptions: controllerpkg.CertificateOptions{
			CopiedAnnotationPrefixes: []string{
				"*", "-kubectl.kubernetes.io/", "-fluxcd.io/", "-argocd.argoproj.io/",
			},
			CertificateRequestMinimumBackoffDuration: time.Hour,
			CertificateRequestMaximumBackoffDuration: 32 * time.Hour,
		},
	})
	if err != nil {
		return fmt.Errorf("building the controller context factory: %w", err)
	}
	base, err := factory.Build()
	if err != nil {
		return fmt.Errorf("building the base controller context: %w", err)
	}

	// Construct every registered controller first (each adds the informers it
	// needs to the shared factories), then start the factories, as upstream.
	known := controllerpkg.Known()
	names := make([]string, 0, len(known))
	for name := range known {
		names = append(names, name)
	}
	sort.Strings(names)
	g, ctx := errgroup.WithContext(ctx)
	for _, name := range names {
		c, err := known[name](factory)
		if err != nil {
			return fmt.Errorf("constructing controller %s: %w", name, err)
		}
		g.Go(func() error {
			if err := c.Run(workers, ctx); err != nil {
				return fmt.Errorf("controller %s: %w", name, err)
			}
			return nil
		})
	}
	base.SharedInformerFactory.Start(ctx.Done())
	base.KubeSharedInformerFactory.Start(ctx.Done())
	base.HTTP01ResourceMetadataInformersFactory.Start(ctx.Done())
	log.Info("controllers started", "controllers", names)

	err = g.Wait()
	base.HTTP01ResourceMetadataInformersFactory.Shutdown()
	base.KubeSharedInformerFactory.Shutdown()
	base.SharedInformerFactory.Shutdown()
	return err
}
