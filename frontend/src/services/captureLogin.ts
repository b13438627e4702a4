// Takes a login link's token before anything reads the address: imported first by
// main.ts, so that the router, created when its module loads, never sees (and puts back)
// the `#token=` fragment.
import { captureTokenFromUrl } from './auth'

captureTokenFromUrl()
