// Command cert-manager-cainjector runs cert-manager's CA injector for
// APIServices: for each APIService annotated cert-manager.io/inject-ca-from:
// <namespace>/<certificate> it copies the ca.crt of that Certificate's Secret
// into spec.caBundle, and keeps it current. It is wired from
// github.com/cert-manager/cert-manager/pkg/controller/cainjector (the
// project's own cmd/cainjector module is not on the Go module proxy) the way
// cmd/cainjector/app/controller.go of the same release does, minus leader
// election and the metrics/pprof servers, with only the APIService
// reconciler enabled (webhook configurations and CRD conversion are off).
//
//	cert-manager-cainjector --kubeconfig admin.kubeconfig [--v=2]
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	corev1 "k8s.io/api/core/v1"
	apiext "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	kscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"
	apireg "k8s.io/kube-aggregator/pkg/apis/apiregistration/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	cmscheme "github.com/cert-manager/cert-manager/pkg/client/clientset/versioned/scheme"
	"github.com/cert-manager/cert-manager/pkg/controller/cainjector"
	"github.com/cert-manager/cert-manager/pkg/util"
)

func main() {
	// A FlagSet of our own: controller-runtime registers its own --kubeconfig
	// on flag.CommandLine when linked in.
	flags := flag.NewFlagSet(os.Args[0], flag.ExitOnError)
	klog.InitFlags(flags) // --v and klog's other flags
	kubeconfig := flags.String("kubeconfig", "", "kubeconfig of the cluster to act on (required)")
	_ = flags.Parse(os.Args[1:]) // ExitOnError: exits on a bad flag
	if *kubeconfig == "" {
		fmt.Fprintln(os.Stderr, "cert-manager-cainjector: --kubeconfig is required")
		os.Exit(2)
	}
	// controller-runtime logs through this; klog writes to stderr.
	ctrl.SetLogger(klog.Background().WithName("cainjector"))

	if err := run(ctrl.SetupSignalHandler(), *kubeconfig); err != nil {
		klog.ErrorS(err, "cert-manager-cainjector failed")
		klog.Flush()
		os.Exit(1)
	}
}

func run(ctx context.Context, kubeconfig string) error {
	restConfig, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return fmt.Errorf("loading kubeconfig %s: %w", kubeconfig, err)
	}
	restConfig = util.RestConfigWithUserAgent(restConfig, "cainjector")

	scheme := runtime.NewScheme()
	utilruntime.Must(kscheme.AddToScheme(scheme))
	utilruntime.Must(cmscheme.AddToScheme(scheme))
	utilruntime.Must(apiext.AddToScheme(scheme))
	utilruntime.Must(apireg.AddToScheme(scheme))

	mgr, err := ctrl.NewManager(restConfig, ctrl.Options{
		Scheme: scheme,
		Cache:  cache.Options{ReaderFailOnMissingInformer: true},
		// As upstream: Secrets are read directly, never cached (the
		// reconcilers watch only their metadata).
		Client: client.Options{Cache: &client.CacheOptions{
			DisableFor: []client.Object{&corev1.Secret{}},
		}},
		Metrics: metricsserver.Options{BindAddress: "0"}, // no metrics server
	})
	if err != nil {
		return fmt.Errorf("creating the controller manager: %w", err)
	}

	// inject-ca-from names a Certificate, so its CRD must be served before
	// the Certificate watch starts; upstream waits the same way.
	direct, err := client.New(restConfig, client.Options{Scheme: scheme, Mapper: mgr.GetRESTMapper()})
	if err != nil {
		return fmt.Errorf("creating a client: %w", err)
	}
	err = wait.PollUntilContextTimeout(ctx, time.Second, 5*time.Minute, true, func(ctx context.Context) (bool, error) {
		crd := apiext.CustomResourceDefinition{}
		err := direct.Get(ctx, types.NamespacedName{Name: "certificates.cert-manager.io"}, &crd)
		if err != nil {
			klog.InfoS("waiting for the certificates.cert-manager.io CRD", "err", err)
			return false, nil
		}
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("waiting for the certificates.cert-manager.io CRD: %w", err)
	}

	err = cainjector.RegisterAllInjectors(ctx, mgr, cainjector.SetupOptions{
		EnableCertificatesDataSource: true, // cert-manager.io/inject-ca-from
		EnabledReconcilersFor: map[string]bool{
			cainjector.APIServiceName: true,
		},
	})
	if err != nil {
		return fmt.Errorf("registering the APIService injector: %w", err)
	}
	klog.InfoS("starting the APIService CA injector")
	if err := mgr.Start(ctx); err != nil {
		return fmt.Errorf("running the controller manager: %w", err)
	}
	return nil
}
